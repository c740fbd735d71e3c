"""The paper's Tables 1-7 (and, through ``tafs.report.figures``, Figure 4) from the grid manifest.

The manifest (``results/manifest.json``, written by ``tafs.grid``) names the task's metrics and categories,
the seeds, the NFEs and, per table, its rows as ``[label, run]`` pairs. Every number is read from the
per-run files of the results layout (``tafs.paths``) through ``tafs.report.results``; each table is
written as ``table{N}.csv`` / ``.md`` / ``.tex`` plus ``captions.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tafs.io import write_json
from tafs.report.manifest import Manifest, load_manifest
from tafs.report.results import (baseline_eval_stats, eval_keys, model_eval_options, pearson_by_step,
                                 read_train_curves, run_train_stats, unscored)
from tafs.report.table_model import (BASE_NOTE, Column, Table, is_missing, make_table, method_columns,
                                     metric_columns, sampler_columns, seed_note, stat_cells, write_table)
from tafs.stats import NAN, mean_ci

TABLE_IDS = tuple(f"table{i}" for i in range(1, 8))


def _heading(m: Manifest, table: str) -> str:
    name = table.replace("table", "Table ")
    note = m.caption_prefix.removesuffix(" of").lower()
    return f"{name} ({note})" if note else name


def sampler_rows(m: Manifest, results: Path, model: str, nfe: int, need: str, row: dict[str, Any],
                 keys: list[str], categories: bool = False, samplers: tuple[str, ...] | None = None,
                 declared: str | None = None) -> list[dict]:
    """One row per sampler the model was evaluated with at ``nfe`` (or ``samplers``); ``declared`` marks the
    sampler its method declares (default ``m.declared_sampler(model)``): the one row Markdown and LaTeX show.
    No metric takes part in the choice: the test set never picks the sampler."""
    declared = declared or m.declared_sampler(model)
    samplers = samplers or m.samplers_of(model)
    if declared not in samplers:
        raise ValueError(f"{need}: {model!r} is not evaluated with its declared sampler {declared!r} (evaluated: "
                         f"{list(samplers)}); the grid evaluates it (tafs.grid.run_samplers): rebuild manifest.json")
    options = model_eval_options(results, m, model, nfe, need, categories, samplers)
    return [{**row, "sampler": s, "declared": s == declared, **stat_cells(st, keys)} for s, st in options]


def sampler_note(m: Manifest, models: list[str]) -> str:
    """How the Sampler column was chosen: by each method's declaration, never by a test metric."""
    note = ("; each model is shown with the sampler its method declares (the annealed chain for annealed-chain "
            "methods, the Euler ODE for SDE-trained ones and the base), named in the Sampler column and never "
            "chosen by a test metric")
    if any(len(m.samplers_of(x)) > 1 for x in models):
        note += "; the CSV also has the other sampler's rows (column declared = false)"
    return note


def table1(m: Manifest, results: Path) -> Table:
    """Base at each configured (sampler, NFE) and each Table-1 run at each ``table1_nfe``, under its task's view
    (Table 1 may train on a task of its own: tables.table1.task)."""
    m = m.for_table("table1")
    keys = [k.column for k in eval_keys(m, categories=True)]
    rows = []
    for sampler, nfe in m.base_evals:  # each (sampler, NFE) named by the config (tables.base_rows)
        rows += sampler_rows(m, results, "base", nfe, "table1", {"method": m.base_label, "run": "base",
                             "n_seeds": None, "nfe": nfe}, keys, True, (sampler,), sampler)
    for name, (label, _, nfes) in m.baselines.items():
        for nfe in nfes:
            st = baseline_eval_stats(results, m, name, nfe, "table1", categories=True)
            rows.append({"method": label, "run": f"baselines/{name}", "n_seeds": None, "sampler": "pipeline",
                         "declared": True, "nfe": nfe, **stat_cells(st, keys)})
    runs = m.rows("table1")
    for label, run in runs:
        for nfe in m.table1_nfe:
            rows += sampler_rows(m, results, run, nfe, "table1", {"method": label, "run": run,
                                 "n_seeds": len(m.seeds_of(run)), "nfe": nfe}, keys, True)
    columns = method_columns() + sampler_columns() + [Column("nfe", "NFE")] + metric_columns(m, True)
    task = {r.task for _, name in runs if (r := m.run(name, "table1")).task}
    on = f"; the trained rows train on task {', '.join(sorted(task))}" if task else ""
    caption = (f"{m.title('table1')} (step-distilled few-step comparison on GenEval): the base model at each "
               "sampler/NFE, each evaluation-only baseline through its own pipeline, and each trained method at each "
               f"NFE{_category_note(m)}{on}{sampler_note(m, ['base'] + [r for _, r in runs])}; "
               f"{seed_note(m, [r for _, r in runs])}; "
               f"{BASE_NOTE}.")
    return make_table("table1", rows, columns, caption, _heading(m, "table1"), shown="declared")


def table2(m: Manifest, results: Path, reference: str = "tafs_grpo") -> Table:
    """Training cost (NFE_old / NFE_theta, seconds per iteration) and quality at ``main_nfe``.

    ``time_vs_ref`` is seconds per iteration divided by that of the ``reference`` run's row
    (e.g. 2.1x = twice as slow as TAFS-GRPO); NaN when the reference run is not in the table.
    """
    keys = list(m.metrics)
    rows = sampler_rows(m, results, "base", m.main_nfe, "table2",
                        {"method": m.base_label, "run": "base", "n_seeds": None, "nfe_old_theta": None,
                         "nfe_old": None, "nfe_theta": None, "sec_per_iter": NAN, "sec_per_iter_ci95": NAN}, keys)
    for label, run in m.rows("table2"):
        ts = run_train_stats(results, m, run, "table2")
        rows += sampler_rows(m, results, run, m.main_nfe, "table2",
                             {"method": label, "run": run, "n_seeds": len(m.seeds_of(run)),
                              "nfe_old_theta": f"{ts.nfe_old} / {ts.nfe_theta}", "nfe_old": ts.nfe_old,
                              "nfe_theta": ts.nfe_theta, "sec_per_iter": ts.sec_per_iter.mean,
                              "sec_per_iter_ci95": ts.sec_per_iter.ci95}, keys)
    ref_rows = [r for r in rows if r["run"] == reference]
    ref_time = ref_rows[0]["sec_per_iter"] if ref_rows else NAN
    ref_label = ref_rows[0]["method"] if ref_rows else reference
    for r in rows:
        r["time_vs_ref"] = r["sec_per_iter"] / ref_time if ref_time and not is_missing(ref_time) else NAN
    columns = method_columns() + sampler_columns() + [
        Column("nfe_old_theta", "NFE_old / NFE_θ"),
        Column("nfe_old", "NFE_old", show=False),
        Column("nfe_theta", "NFE_θ", show=False),
        Column("sec_per_iter", "Time / iter (s)", digits=2, ci=True),
        Column("time_vs_ref", f"Time vs {ref_label}", digits=2, suffix="×"),
    ] + metric_columns(m)
    caption = (f"{m.title('table2')} (training cost and in/out-of-domain quality at {m.main_nfe} NFE): "
               "NFE_old / NFE_θ are the forward passes of the old and current policy per policy ratio, time is "
               f"seconds per training iteration and 'Time vs {ref_label}' its ratio to that row"
               f"{sampler_note(m, ['base'] + [r for _, r in m.rows('table2')])}; "
               f"{seed_note(m, [r for _, r in m.rows('table2')])}; {BASE_NOTE}.")
    return make_table("table2", rows, columns, caption, _heading(m, "table2"), shown="declared")


def ablation_table(m: Manifest, results: Path, name: str, first_header: str, with_time: bool,
                   caption: str) -> Table:
    """Rows ``(label, run)`` of ``name`` with (optionally) time per iteration and metrics at ``main_nfe``;
    ``caption`` is completed with the sampler and seed notes."""
    keys = list(m.metrics)
    rows = []
    for label, run in m.rows(name):
        row: dict[str, Any] = {"method": label, "run": run, "n_seeds": len(m.seeds_of(run))}
        if with_time:
            t = run_train_stats(results, m, run, name).sec_per_iter
            row.update(sec_per_iter=t.mean, sec_per_iter_ci95=t.ci95)
        rows += sampler_rows(m, results, run, m.main_nfe, name, row, keys)
    time_cols = [Column("sec_per_iter", "Time / iter (s)", digits=2, ci=True)] if with_time else []
    runs = [r for _, r in m.rows(name)]
    columns = method_columns(first_header, m, runs) + sampler_columns() + time_cols + metric_columns(m)
    caption = f"{caption}{sampler_note(m, runs)}; {seed_note(m, runs)}."
    return make_table(name, rows, columns, caption, _heading(m, name), shown="declared")


def table3(m: Manifest, results: Path) -> Table:
    return ablation_table(m, results, "table3", "Method", False,
                          f"{m.title('table3')} (component ablation: without temperature-annealed sampling, "
                          f"without step-aware advantages) at {m.main_nfe} NFE")


def table4(m: Manifest, results: Path) -> Table:
    return ablation_table(m, results, "table4", "N_annealed", True,
                          f"{m.title('table4')} (number of temperature-annealed sampling steps): seconds per "
                          f"training iteration and quality at {m.main_nfe} NFE")


def table5(m: Manifest, results: Path) -> Table:
    return ablation_table(m, results, "table5", "N_adv", True,
                          f"{m.title('table5')} (number of advantage-integration steps): seconds per training "
                          f"iteration and quality at {m.main_nfe} NFE")


def table6(m: Manifest, results: Path) -> Table:
    return ablation_table(m, results, "table6", "Reward", False,
                          f"{m.title('table6')} (training-reward sensitivity: single vs combined rewards) at "
                          f"{m.main_nfe} NFE")


def table7(m: Manifest, results: Path) -> Table:
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
    return make_table("table7", out_rows, columns, caption, _heading(m, "table7"))


def reference_run(m: Manifest, reference: str | None = None) -> str:
    """Table 2's time reference: given, else the run Tables 4-7 ablate (the manifest's ``table7``
    run, i.e. TAFS-GRPO), else ``tafs_grpo``."""
    return reference or m.tables.get("table7") or "tafs_grpo"


def build_tables(m: Manifest, results: Path, reference: str | None = None) -> dict[str, Table]:
    reference = reference_run(m, reference)
    return {
        "table1": table1(m, results),
        "table2": table2(m, results, reference),
        "table3": table3(m, results),
        "table4": table4(m, results),
        "table5": table5(m, results),
        "table6": table6(m, results),
        "table7": table7(m, results),
    }


def _category_note(m: Manifest) -> str:
    if not (m.category_metric and m.categories):
        return ""
    return f", with {m.label(m.category_metric)} per prompt category"


def unscored_note(m: Manifest, results: Path) -> str:
    """" Unscored images ..." when a reward could not score some evaluation images (else "")."""
    counts = unscored(results)
    if not counts:
        return ""
    parts = [f"{m.label(k)} {bad} of {n}" for k, (bad, n) in counts.items()]
    return (f" Images a reward could not score (e.g. no parsable answer), left out of the means: {', '.join(parts)} "
            "over all evaluations; '-' where none could be scored.")


# --------------------------------------------------------------------------- entry point


def write_all(grid_path: Path, results: Path, out_dir: Path, figure: Path | None,
              metric: str | None = None, reference: str | None = None) -> dict[str, Table]:
    """Every table (csv/md/tex) and ``captions.json`` under ``out_dir``; Figure 4 at ``figure``."""
    m = load_manifest(grid_path)
    tables = build_tables(m, results, reference)
    note = unscored_note(m, results)
    for table in tables.values():
        table.caption += note
        write_table(table, out_dir)
    captions = {name: t.caption for name, t in tables.items()}
    if figure is not None:
        from tafs.report.figures import figure4

        main, second = m.figure_metrics
        captions["figure4"] = figure4(m, results, figure, metric or main, second)
    write_json(out_dir / "captions.json", captions)
    return tables


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tafs tables", description="The paper's Tables 1-7 and Figure 4 from manifest.json")
    p.add_argument("--manifest", default="results/manifest.json", help="grid manifest (manifest.json)")
    p.add_argument("--results", default="results", help="results root holding runs/ and eval/")
    p.add_argument("--out", default="results/tables", help="folder for table{1..7}.{csv,md,tex} and captions.json")
    p.add_argument("--figure", default="results/figures/figure4.png",
                   help="Figure 4 PNG path (a PDF is written beside it); 'none' to skip")
    p.add_argument("--metric", default=None, help="Figure 4's main metric (default: the manifest's figure4.metric)")
    p.add_argument("--reference", default=None,
                   help="run whose time per iteration Table 2's 'Time vs' column divides by "
                        "(default: the manifest's table7 run, else tafs_grpo)")
    return p


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    figure = None if str(a.figure).lower() == "none" else Path(a.figure)
    write_all(Path(a.manifest), Path(a.results), Path(a.out), figure, a.metric, a.reference)


if __name__ == "__main__":
    main()
