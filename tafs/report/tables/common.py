"""What the table modules share: a table's registry entry (``TableDef``), its heading, the rows of a model at each
sampler it was evaluated with, the sampler note, Tables 3-6's ablation table and Table 2's time reference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tafs.report.manifest import Manifest
from tafs.report.results import model_eval_options, run_train_stats
from tafs.report.table_model import (BASE_NOTE, Column, Table, make_table, method_columns, metric_columns,
                                     sampler_columns, seed_note, stat_cells)


@dataclass(frozen=True)
class TableDef:
    """One table of the report, as the registry (``tafs.report.tables.TABLES``) holds it.

    ``name`` ("table3") names its files (``table3.csv`` / ``.md`` / ``.tex``), its ``captions.json`` key, its
    Snakemake report caption (``workflow/report/table3.rst``) and its title ("Table 3"); ``build(m, results,
    **options) -> Table`` makes it (its caption included) from the manifest and the results folder; ``reads`` are
    the manifest's ``tables`` keys whose rows it reads (built by ``tafs.grid.build_grid``); ``options`` the keyword
    options of ``paper_tables.write_all`` it takes (Table 2: ``reference``)."""

    name: str
    description: str
    build: Callable[..., Table]
    reads: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


def heading(m: Manifest, table: str) -> str:
    """"Table 3 (toy analogue)" / "Table 3": the Markdown heading of a table."""
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


def base_and_runs_notes(m: Manifest, runs: list[str]) -> str:
    """The caption's closing notes of a table with a base row and trained ``runs``: samplers, seeds, the base's CI."""
    return f"{sampler_note(m, ['base'] + runs)}; {seed_note(m, runs)}; {BASE_NOTE}"


def ablation_def(name: str, first_header: str, with_time: bool, what: str, description: str) -> TableDef:
    """A table of Tables 3-6's kind: the rows of ``name`` at ``main_nfe`` (with seconds per iteration when
    ``with_time``), captioned "<Table N> (<what>)" and what the columns show."""

    def build(m: Manifest, results: Path) -> Table:
        shows = ": seconds per training iteration and quality at" if with_time else " at"
        return ablation_table(m, results, name, first_header, with_time,
                              f"{m.title(name)} ({what}){shows} {m.main_nfe} NFE")

    return TableDef(name, description, build, reads=(name,))


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
    return make_table(name, rows, columns, caption, heading(m, name), shown="declared")


def reference_run(m: Manifest, reference: str | None = None) -> str:
    """Table 2's time reference: given, else the run Tables 4-7 ablate (the manifest's ``table7``
    run, i.e. TAFS-GRPO), else ``tafs_grpo``."""
    return reference or m.tables.get("table7") or "tafs_grpo"
