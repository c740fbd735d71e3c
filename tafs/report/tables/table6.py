"""Table 6: training-reward sensitivity (single vs combined rewards) at ``main_nfe``.

Rows: the manifest's ``tables.table6`` (``ablations.reward_mixes`` around ``tables.ablation_of``, built by
``tafs.grid.build_grid``)."""

from __future__ import annotations

from pathlib import Path

from tafs.report.manifest import Manifest
from tafs.report.table_model import Table
from tafs.report.tables.common import TableDef, ablation_table


def build(m: Manifest, results: Path) -> Table:
    return ablation_table(m, results, "table6", "Reward", False,
                          f"{m.title('table6')} (training-reward sensitivity: single vs combined rewards) at "
                          f"{m.main_nfe} NFE")


TABLE = TableDef("table6", "training-reward sensitivity", build, reads=("table6",))
