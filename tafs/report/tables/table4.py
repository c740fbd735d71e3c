"""Table 4: the number of temperature-annealed sampling steps N_annealed: seconds per iteration and quality at
``main_nfe``.

Rows: the manifest's ``tables.table4`` (``ablations.n_annealed`` around ``tables.ablation_of``, built by
``tafs.grid.build_grid``)."""

from __future__ import annotations

from pathlib import Path

from tafs.report.manifest import Manifest
from tafs.report.table_model import Table
from tafs.report.tables.common import TableDef, ablation_table


def build(m: Manifest, results: Path) -> Table:
    return ablation_table(m, results, "table4", "N_annealed", True,
                          f"{m.title('table4')} (number of temperature-annealed sampling steps): seconds per "
                          f"training iteration and quality at {m.main_nfe} NFE")


TABLE = TableDef("table4", "number of temperature-annealed sampling steps", build, reads=("table4",))
