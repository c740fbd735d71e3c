"""Table 3: the component ablation (without temperature-annealed sampling, without step-aware advantages) at
``main_nfe``.

Rows: the manifest's ``tables.table3`` (``tables.components``, built by ``tafs.grid.build_grid``)."""

from __future__ import annotations

from pathlib import Path

from tafs.report.manifest import Manifest
from tafs.report.table_model import Table
from tafs.report.tables.common import TableDef, ablation_table


def build(m: Manifest, results: Path) -> Table:
    return ablation_table(m, results, "table3", "Method", False,
                          f"{m.title('table3')} (component ablation: without temperature-annealed sampling, "
                          f"without step-aware advantages) at {m.main_nfe} NFE")


TABLE = TableDef("table3", "component ablation", build, reads=("table3",))
