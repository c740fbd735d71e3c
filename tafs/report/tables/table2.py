"""Table 2: training cost (NFE_old / NFE_θ, seconds per iteration, its ratio to a reference run's) and in/out-of-domain
quality at ``main_nfe``.

Rows: the manifest's ``tables.table2`` (``tables.comparison``, the ablated method last); its time reference is the
``tables.table7`` run unless ``--reference`` names another."""

from __future__ import annotations

from pathlib import Path

from tafs.report.manifest import Manifest
from tafs.report.results import run_train_stats
from tafs.report.table_model import (Column, Table, is_missing, make_table, method_columns, metric_columns,
                                     sampler_columns)
from tafs.report.tables.common import TableDef, base_and_runs_notes, heading, reference_run, sampler_rows
from tafs.stats import NAN


def build(m: Manifest, results: Path, reference: str | None = None) -> Table:
    """Training cost (NFE_old / NFE_theta, seconds per iteration) and quality at ``main_nfe``.

    ``time_vs_ref`` is seconds per iteration divided by that of the ``reference`` run's row (default:
    ``reference_run``, e.g. 2.1x = twice as slow as TAFS-GRPO); NaN when the reference run is not in the table.
    """
    reference = reference_run(m, reference)
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
               f"{base_and_runs_notes(m, [r for _, r in m.rows('table2')])}.")
    return make_table("table2", rows, columns, caption, heading(m, "table2"), shown="declared")


TABLE = TableDef("table2", "training cost and quality at the tables' NFE", build, reads=("table2", "table7"),
                 options=("reference",))
