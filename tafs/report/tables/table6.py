"""Table 6: training-reward sensitivity (single vs combined rewards) at ``main_nfe``.

Rows: the manifest's ``tables.table6`` (``ablations.reward_mixes`` around ``tables.ablation_of``, built by
``tafs.grid.build_grid``)."""

from __future__ import annotations

from tafs.report.tables.common import ablation_def

TABLE = ablation_def("table6", "Reward", False, "training-reward sensitivity: single vs combined rewards",
                     "training-reward sensitivity")
build = TABLE.build
