"""Table 3: the component ablation (without temperature-annealed sampling, without step-aware advantages) at
``main_nfe``.

Rows: the manifest's ``tables.table3`` (``tables.components``, built by ``tafs.grid.build_grid``)."""

from __future__ import annotations

from tafs.report.tables.common import ablation_def

TABLE = ablation_def("table3", "Method", False, "component ablation: without temperature-annealed sampling, without step-aware advantages",
                     "component ablation")
build = TABLE.build
