"""Table 4: the number of temperature-annealed sampling steps N_annealed: seconds per iteration and quality at
``main_nfe``.

Rows: the manifest's ``tables.table4`` (``ablations.n_annealed`` around ``tables.ablation_of``, built by
``tafs.grid.build_grid``)."""

from __future__ import annotations

from tafs.report.tables.common import ablation_def

TABLE = ablation_def("table4", "N_annealed", True, "number of temperature-annealed sampling steps",
                     "number of temperature-annealed sampling steps")
build = TABLE.build
