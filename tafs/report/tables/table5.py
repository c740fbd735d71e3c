"""Table 5: the number of advantage-integration steps N_adv: seconds per iteration and quality at ``main_nfe``.

Rows: the manifest's ``tables.table5`` (``ablations.n_adv`` and ``ablations.advantage_modes`` around
``tables.ablation_of``, built by ``tafs.grid.build_grid``)."""

from __future__ import annotations

from tafs.report.tables.common import ablation_def

TABLE = ablation_def("table5", "N_adv", True, "number of advantage-integration steps",
                     "number of advantage-integration steps")
build = TABLE.build
