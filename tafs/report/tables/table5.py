"""Table 5: the number of advantage-integration steps N_adv: seconds per iteration and quality at ``main_nfe``.

Rows: the manifest's ``tables.table5`` (``ablations.n_adv`` and ``ablations.advantage_modes`` around
``tables.ablation_of``, built by ``tafs.grid.build_grid``)."""

from __future__ import annotations

from pathlib import Path

from tafs.report.manifest import Manifest
from tafs.report.table_model import Table
from tafs.report.tables.common import TableDef, ablation_table


def build(m: Manifest, results: Path) -> Table:
    return ablation_table(m, results, "table5", "N_adv", True,
                          f"{m.title('table5')} (number of advantage-integration steps): seconds per training "
                          f"iteration and quality at {m.main_nfe} NFE")


TABLE = TableDef("table5", "number of advantage-integration steps", build, reads=("table5",))
