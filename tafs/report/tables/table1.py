"""Table 1: the step-distilled few-step comparison on GenEval (the base at each configured sampler/NFE, each
evaluation-only baseline through its own pipeline, each trained method at each ``table1_nfe``), under its task's
view of the metrics (Table 1 may train on a task of its own: ``tables.table1.task``).

Rows: the manifest's ``tables.table1`` (``tables.comparison`` or ``tables.table1.methods``), ``base.evals``
(``tables.base_rows``) and ``baselines``."""

from __future__ import annotations

from pathlib import Path

from tafs.report.manifest import Manifest
from tafs.report.results import baseline_eval_stats, eval_keys
from tafs.report.table_model import (Column, Table, make_table, method_columns, metric_columns,
                                     sampler_columns, stat_cells)
from tafs.report.tables.common import TableDef, base_and_runs_notes, heading, sampler_rows


def build(m: Manifest, results: Path) -> Table:
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
               f"NFE{category_note(m)}{on}{base_and_runs_notes(m, [r for _, r in runs])}.")
    return make_table("table1", rows, columns, caption, heading(m, "table1"), shown="declared")


def category_note(m: Manifest) -> str:
    if not (m.category_metric and m.categories):
        return ""
    return f", with {m.label(m.category_metric)} per prompt category"


TABLE = TableDef("table1", "few-step comparison: base, baselines and trained methods at each NFE", build,
                 reads=("table1",))
