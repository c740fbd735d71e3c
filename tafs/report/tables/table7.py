"""Table 7: the validity of intermediate rewards (Pearson r between the reward of each intermediate one-step clean
estimate and the final image's reward, from the training curves of one run).

Rows: the manifest's ``tables.table7``: one run (``tables.ablation_of``), not ``[label, run]`` pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tafs.report.manifest import Manifest
from tafs.report.results import pearson_by_step, read_train_curves
from tafs.report.table_model import Column, Table, make_table, method_columns
from tafs.report.tables.common import TableDef, heading
from tafs.stats import NAN, mean_ci


def build(m: Manifest, results: Path) -> Table:
    """Pearson r between intermediate-step and final-step rewards of the ``table7`` run.

    Per seed, r is averaged over training iterations; seeds are then aggregated (mean ± t CI;
    no CI with one seed).
    """
    run = m.tables.get("table7") or None
    per_seed: list[dict[tuple[str, int], float]] = []
    final = 0
    seeds = m.seeds_of(run) if run else ()
    for seed in seeds:
        rows, path = read_train_curves(results, run, seed, f"table7, run {run!r} seed {seed}")
        means, k_final = pearson_by_step(rows, f"{path} (needed by table7, run {run!r} seed {seed})")
        per_seed.append(means)
        final = max(final, k_final)
    rewards = list(dict.fromkeys(r for means in per_seed for r, _ in means))
    steps = sorted({k for means in per_seed for _, k in means})
    out_rows = []
    for k in steps:
        row: dict[str, Any] = {"method": f"R^{k} with R^{final}", "run": run, "n_seeds": len(seeds),
                               "step": k, "final_step": final}
        for r in rewards:
            st = mean_ci([means.get((r, k), NAN) for means in per_seed])
            row.update({r: st.mean, f"{r}_ci95": st.ci95})
        out_rows.append(row)
    columns = method_columns("Step reward") + [Column("step", "k", show=False),
                                                Column("final_step", "K+1", show=False)]
    columns += [Column(r, f"{r} (r)", digits=3, ci=True) for r in rewards]
    n = len(seeds)
    spread = (f"mean ± 95 % CI over {n} seeds (Student t)" if n > 1 else "one seed, so no CI")
    caption = (f"{m.title('table7')} (validity of intermediate rewards): Pearson r across each training "
               "iteration's samples between the reward of the step-k one-step clean estimate and the final-image "
               f"reward of the {run or '(none)'} run, averaged over iterations per seed; {spread}.")
    return make_table("table7", out_rows, columns, caption, heading(m, "table7"))


TABLE = TableDef("table7", "validity of intermediate rewards (Pearson r with the final reward)", build,
                 reads=("table7",))
