"""The paper's Tables 1-7 and Figure 4, as toy-world analogues, from the grid manifest.

The manifest (``results/grid.json``, written by ``tafs.grid``) names the seeds, the NFEs, the
metrics and, per table, its rows as ``[label, run]`` pairs. Every number here is read from the
per-run files under the results root:

* ``runs/{run}/seed{s}/train_summary.json``  (NFE_old / NFE_theta, seconds per iteration)
* ``runs/{run}/seed{s}/metrics.jsonl``       (per-iteration Pearson r of step-k vs final rewards)
* ``eval/runs/{run}/seed{s}/{sampler}/nfe{n}/metrics.json`` and ``eval/base/{sampler}/nfe{n}/metrics.json``

Seeds are aggregated as mean and 95 % CI half-width with the t distribution. With a single seed
there is no between-seed spread, so evaluation cells fall back to the evaluation's own CI over
test images and training quantities get no CI; the captions say which applies. The base model is
not trained, so its rows always carry the evaluation's CI.

Each table is written as ``table{N}.csv`` (numbers: ``<col>`` and ``<col>_ci95``), ``table{N}.md``
and ``table{N}.tex`` (``mean ± ci``), plus ``captions.json``; Figure 4 via
``tafs.report.figures.figure4_grid``.
"""

from __future__ import annotations

import argparse
import errno
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from tafs.io import atomic_path, read_json, read_jsonl, write_json
from tafs.toyworld.prompts import CATEGORIES

NAN = float("nan")
PERCENT_METRICS = ("correct", "dense")  # shown in % with 1 decimal; others with 3 decimals
TABLE_IDS = tuple(f"table{i}" for i in range(1, 8))
_PEARSON_KEY = re.compile(r"^reward/(?P<reward>.+)/step(?P<k>\d+)_pearson_final$")
_STEP_MEAN_KEY = re.compile(r"^reward/(?P<reward>.+)/step(?P<k>\d+)_mean$")
_LATEX_SYMBOLS = {"±": r"$\pm$", "θ": r"$\theta$", "×": r"$\times$"}


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class RunSpec:
    name: str
    label: str
    eval_sampler: str


@dataclass(frozen=True)
class Grid:
    """The parts of ``grid.json`` the report needs."""

    seeds: tuple[int, ...]
    run_nfe: tuple[int, ...]
    main_nfe: int
    table1_nfe: tuple[int, ...]
    base_label: str
    base_evals: tuple[tuple[str, int], ...]
    metrics_in: tuple[str, ...]
    metrics_out: tuple[str, ...]
    metric_labels: dict[str, str]
    runs: dict[str, RunSpec]
    tables: dict[str, Any]

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.metrics_in + self.metrics_out

    def rows(self, table: str) -> list[tuple[str, str]]:
        """``(label, run)`` pairs of a table; empty when the manifest lists none."""
        return [(str(label), str(run)) for label, run in (self.tables.get(table) or [])]

    def run(self, name: str, need: str) -> RunSpec:
        if name not in self.runs:
            raise KeyError(f"run {name!r} (needed by {need}) is not in the grid manifest's 'runs'")
        return self.runs[name]

    def label(self, metric: str) -> str:
        return self.metric_labels.get(metric, metric)


def load_grid(path: str | Path) -> Grid:
    g = read_required_json(Path(path), "the paper tables (grid manifest)")
    runs = {name: RunSpec(name, r.get("label", name), r["eval_sampler"]) for name, r in g["runs"].items()}
    return Grid(
        seeds=tuple(int(s) for s in g["seeds"]),
        run_nfe=tuple(int(n) for n in g["run_nfe"]),
        main_nfe=int(g["main_nfe"]),
        table1_nfe=tuple(int(n) for n in g["table1_nfe"]),
        base_label=g["base"].get("label", "Base"),
        base_evals=tuple((str(s), int(n)) for s, n in g["base"]["evals"]),
        metrics_in=tuple(g["metrics"]["in_domain"]),
        metrics_out=tuple(g["metrics"]["out_of_domain"]),
        metric_labels=dict(g.get("metric_labels", {})),
        runs=runs,
        tables=dict(g.get("tables", {})),
    )


# --------------------------------------------------------------------------- files


def read_required_json(path: Path, need: str) -> Any:
    """Read a JSON file; a missing one raises ``FileNotFoundError`` naming it and its consumer."""
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, f"missing file needed by {need}", str(path))
    return read_json(path)


def read_required_jsonl(path: Path, need: str) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, f"missing file needed by {need}", str(path))
    return read_jsonl(path)


def run_eval_path(results: Path, run: str, seed: int, sampler: str, nfe: int) -> Path:
    return results / "eval" / "runs" / run / f"seed{seed}" / sampler / f"nfe{nfe}" / "metrics.json"


def base_eval_path(results: Path, sampler: str, nfe: int) -> Path:
    return results / "eval" / "base" / sampler / f"nfe{nfe}" / "metrics.json"


def train_summary_path(results: Path, run: str, seed: int) -> Path:
    return results / "runs" / run / f"seed{seed}" / "train_summary.json"


def train_metrics_path(results: Path, run: str, seed: int) -> Path:
    return results / "runs" / run / f"seed{seed}" / "metrics.jsonl"


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Stat:
    """A mean and its 95 % CI half-width (NaN when unknown)."""

    mean: float
    ci95: float


def mean_ci(values: Sequence[float], single_ci: float = NAN, confidence: float = 0.95) -> Stat:
    """Mean and t-based CI half-width over seeds.

    With one value there is no spread to estimate, so ``single_ci`` (the caller's fallback: the
    evaluation's CI over test images, or NaN for training quantities) is used. Any NaN value
    (a metric absent from one seed's file) makes the whole cell NaN rather than silently
    averaging fewer seeds.
    """
    v = np.asarray(list(values), dtype=float)
    if v.size == 0 or np.isnan(v).any():
        return Stat(NAN, NAN)
    if v.size == 1:
        return Stat(float(v[0]), float(single_ci))
    half = stats.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return Stat(float(v.mean()), float(half))


def category_key(category: str) -> str:
    """Column of strict accuracy restricted to one prompt category."""
    return f"correct_{category}"


def eval_keys(grid: Grid, categories: bool) -> list[str]:
    return list(grid.metrics) + ([category_key(c) for c in CATEGORIES] if categories else [])


def eval_values(m: dict, keys: Sequence[str]) -> dict[str, Stat]:
    """(mean, ci95) of each key from one ``metrics.json``; an absent metric or category is NaN."""
    metrics = m.get("metrics", {})
    out: dict[str, Stat] = {}
    for key in keys:
        if key in metrics:
            entry = metrics[key]
        else:
            cat = key.removeprefix("correct_") if key.startswith("correct_") else None
            entry = metrics.get("correct", {}).get("by_category", {}).get(cat) if cat else None
        out[key] = Stat(float(entry["mean"]), float(entry.get("ci95", NAN))) if entry else Stat(NAN, NAN)
    return out


def run_eval_stats(results: Path, grid: Grid, run: str, nfe: int, need: str,
                   categories: bool = False) -> dict[str, Stat]:
    """A run's evaluation at one NFE (its own eval sampler), aggregated over the grid's seeds."""
    spec = grid.run(run, need)
    keys = eval_keys(grid, categories)
    per_seed = []
    for seed in grid.seeds:
        path = run_eval_path(results, run, seed, spec.eval_sampler, nfe)
        m = read_required_json(path, f"{need}, run {run!r} seed {seed} ({spec.eval_sampler}, NFE {nfe})")
        per_seed.append(eval_values(m, keys))
    one = len(per_seed) == 1
    return {k: mean_ci([s[k].mean for s in per_seed], per_seed[0][k].ci95 if one else NAN) for k in keys}


def base_eval_stats(results: Path, grid: Grid, sampler: str, nfe: int, need: str,
                    categories: bool = False) -> dict[str, Stat]:
    """The (untrained, unseeded) base model's evaluation: its own CI over test images."""
    m = read_required_json(base_eval_path(results, sampler, nfe), f"{need}, base model ({sampler}, NFE {nfe})")
    return eval_values(m, eval_keys(grid, categories))


@dataclass(frozen=True)
class TrainStats:
    sec_per_iter: Stat
    nfe_old: int
    nfe_theta: int


def run_train_stats(results: Path, grid: Grid, run: str, need: str) -> TrainStats:
    """Seconds per iteration (mean ± CI over seeds; no CI with one seed) and the policy-ratio NFEs."""
    summaries = [read_required_json(train_summary_path(results, run, s), f"{need}, run {run!r} seed {s}")
                 for s in grid.seeds]
    nfes = {(int(t["nfe_old"]), int(t["nfe_theta"])) for t in summaries}
    if len(nfes) != 1:
        raise ValueError(f"run {run!r} (needed by {need}): seeds disagree on NFE_old / NFE_theta: {sorted(nfes)}")
    (nfe_old, nfe_theta), = nfes
    return TrainStats(mean_ci([float(t["sec_per_iter"]) for t in summaries]), nfe_old, nfe_theta)


def pearson_by_step(rows: list[dict], source: str) -> tuple[dict[tuple[str, int], float], int]:
    """Mean over iterations of each ``reward/R/step{k}_pearson_final``, and the final step K+1.

    Iterations where r is undefined (null/NaN, e.g. a group with constant reward) are skipped.
    """
    values: dict[tuple[str, int], list[float]] = {}
    final = 0
    for row in rows:
        for key, value in row.items():
            if (m := _STEP_MEAN_KEY.match(key)) is not None:
                final = max(final, int(m["k"]))
            elif (m := _PEARSON_KEY.match(key)) is not None:
                bucket = values.setdefault((m["reward"], int(m["k"])), [])
                if value is not None and not math.isnan(float(value)):
                    bucket.append(float(value))
    if not values:
        raise ValueError(f"{source}: no 'reward/<R>/step<k>_pearson_final' keys in any iteration")
    means = {key: (float(np.mean(v)) if v else NAN) for key, v in values.items()}
    return means, max(final, 1 + max(k for _, k in means))


# --------------------------------------------------------------------------- table model


@dataclass(frozen=True)
class Column:
    """One column: ``key`` in the CSV (plus ``{key}_ci95`` when ``ci``), ``header`` in md/tex.

    ``digits=None`` marks a text/identifier column shown as is; numbers are shown as
    ``value * scale`` with ``digits`` decimals. ``show=False`` keeps a column in the CSV only.
    """

    key: str
    header: str
    group: str = ""
    scale: float = 1.0
    digits: int | None = None
    ci: bool = False
    suffix: str = ""
    show: bool = True

    @property
    def csv_keys(self) -> list[str]:
        return [self.key, f"{self.key}_ci95"] if self.ci else [self.key]


@dataclass
class Table:
    name: str
    data: pd.DataFrame
    columns: list[Column]
    caption: str


def make_table(name: str, rows: list[dict], columns: list[Column], caption: str) -> Table:
    """Rows (dicts keyed by CSV column) into a Table whose CSV schema is fixed even with no rows."""
    keys = [k for c in columns for k in c.csv_keys]
    return Table(name, pd.DataFrame(rows, columns=keys), columns, caption)


def stat_cells(values: dict[str, Stat], keys: Sequence[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in keys:
        out[k] = values[k].mean
        out[f"{k}_ci95"] = values[k].ci95
    return out


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_text(value: Any) -> str:
    if _is_missing(value):
        return "-"
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def format_stat(mean: float, ci: float, scale: float, digits: int, suffix: str = "") -> str:
    """``mean ± ci`` (scaled); only the mean when the CI is unknown; ``-`` when the mean is."""
    if _is_missing(mean):
        return "-"
    text = f"{mean * scale:.{digits}f}{suffix}"
    if not _is_missing(ci):
        text += f" ± {ci * scale:.{digits}f}"
    return text


def display_frame(table: Table) -> pd.DataFrame:
    """Formatted strings with (group, header) MultiIndex columns, for md and tex."""
    shown = [c for c in table.columns if c.show]
    cells: dict[tuple[str, str], list[str]] = {}
    for c in shown:
        if c.digits is None:
            cells[(c.group, c.header)] = [format_text(v) for v in table.data[c.key]]
        else:
            ci = table.data[f"{c.key}_ci95"] if c.ci else [NAN] * len(table.data)
            cells[(c.group, c.header)] = [format_stat(m, e, c.scale, c.digits, c.suffix)
                                          for m, e in zip(table.data[c.key], ci)]
    frame = pd.DataFrame(cells, columns=pd.MultiIndex.from_tuples([(c.group, c.header) for c in shown]))
    return frame


def to_markdown(table: Table) -> str:
    frame = display_frame(table)
    frame.columns = [f"{h} [{g}]" if g else h for g, h in frame.columns]
    # disable_numparse: keep row labels such as "1" / "3" (Tables 4, 5) as text, left-aligned
    body = frame.to_markdown(index=False, disable_numparse=True)
    return f"**{table.name.replace('table', 'Table ')} (toy analogue).** {table.caption}\n\n{body}\n"


def to_latex(table: Table) -> str:
    frame = display_frame(table)
    if not any(g for g, _ in frame.columns):
        frame.columns = [h for _, h in frame.columns]
    tex = frame.to_latex(index=False, escape=True, multicolumn=True, multicolumn_format="c")
    for symbol, latex in _LATEX_SYMBOLS.items():
        tex = tex.replace(symbol, latex)
    return tex


def write_table(table: Table, out_dir: Path) -> list[Path]:
    """``{name}.csv``, ``.md`` and ``.tex``, each written atomically."""
    paths = []
    for suffix, text in (("csv", table.data.to_csv(index=False)), ("md", to_markdown(table)),
                         ("tex", to_latex(table))):
        path = out_dir / f"{table.name}.{suffix}"
        with atomic_path(path) as tmp:
            tmp.write_text(text)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- columns and captions


def metric_format(metric: str) -> tuple[float, int]:
    """(scale, decimals): % with 1 decimal for strict accuracy/dense score, 3 decimals otherwise."""
    base = "correct" if metric.startswith("correct_") else metric
    return (100.0, 1) if base in PERCENT_METRICS else (1.0, 3)


def metric_header(grid: Grid, metric: str) -> str:
    scale, _ = metric_format(metric)
    return grid.label(metric) + (" (%)" if scale == 100.0 else "")


def metric_columns(grid: Grid, categories: bool = False) -> list[Column]:
    """In-domain, then out-of-domain metrics, then (optionally) strict accuracy per category."""
    cols = []
    for group, metrics in (("in-domain", grid.metrics_in), ("out-of-domain", grid.metrics_out)):
        for m in metrics:
            scale, digits = metric_format(m)
            cols.append(Column(m, metric_header(grid, m), group, scale, digits, ci=True))
    if categories:
        cols += [Column(category_key(c), c.replace("_", " "), "strict acc. by category (%)", 100.0, 1, ci=True)
                 for c in CATEGORIES]
    return cols


def method_columns(header: str = "Method") -> list[Column]:
    return [Column("method", header), Column("run", "Run", show=False), Column("n_seeds", "Seeds", show=False)]


def seed_note(grid: Grid) -> str:
    n = len(grid.seeds)
    if n == 1:
        return ("one training seed, so ± is the evaluation's 95 % CI over test images "
                "and training quantities (time) have no CI")
    return f"± is the 95 % CI half-width of the mean over {n} training seeds (Student t, {n - 1} d.o.f.)"


BASE_NOTE = "the base model row's ± is its evaluation's 95 % CI over test images"


# --------------------------------------------------------------------------- tables


def table1(grid: Grid, results: Path) -> Table:
    """Base at each configured (sampler, NFE) and each Table-1 run at each ``table1_nfe``."""
    keys = eval_keys(grid, categories=True)
    rows = []
    for sampler, nfe in grid.base_evals:
        st = base_eval_stats(results, grid, sampler, nfe, "table1", categories=True)
        rows.append({"method": grid.base_label, "run": "base", "n_seeds": None, "sampler": sampler, "nfe": nfe,
                     **stat_cells(st, keys)})
    for label, run in grid.rows("table1"):
        for nfe in grid.table1_nfe:
            st = run_eval_stats(results, grid, run, nfe, "table1", categories=True)
            rows.append({"method": label, "run": run, "n_seeds": len(grid.seeds),
                         "sampler": grid.run(run, "table1").eval_sampler, "nfe": nfe, **stat_cells(st, keys)})
    columns = method_columns() + [Column("sampler", "Sampler"), Column("nfe", "NFE")] + metric_columns(grid, True)
    caption = ("Toy analogue of Table 1 (step-distilled few-step comparison on GenEval): the base model at each "
               "sampler/NFE and each trained method with its evaluation sampler at each NFE, with strict "
               f"(GenEval-like) accuracy per prompt category; {seed_note(grid)}; {BASE_NOTE}.")
    return make_table("table1", rows, columns, caption)


def table2(grid: Grid, results: Path, reference: str = "tafs_grpo") -> Table:
    """Training cost (NFE_old / NFE_theta, seconds per iteration) and quality at ``main_nfe``.

    ``time_vs_ref`` is seconds per iteration divided by that of the ``reference`` run's row
    (e.g. 2.1x = twice as slow as TAFS-GRPO); NaN when the reference run is not in the table.
    """
    keys = list(grid.metrics)
    base = base_eval_stats(results, grid, "ode", grid.main_nfe, "table2")
    rows: list[dict] = [{"method": grid.base_label, "run": "base", "n_seeds": None, "nfe_old_theta": None,
                         "nfe_old": None, "nfe_theta": None, "sec_per_iter": NAN, "sec_per_iter_ci95": NAN,
                         **stat_cells(base, keys)}]
    for label, run in grid.rows("table2"):
        ts = run_train_stats(results, grid, run, "table2")
        st = run_eval_stats(results, grid, run, grid.main_nfe, "table2")
        rows.append({"method": label, "run": run, "n_seeds": len(grid.seeds),
                     "nfe_old_theta": f"{ts.nfe_old} / {ts.nfe_theta}", "nfe_old": ts.nfe_old,
                     "nfe_theta": ts.nfe_theta, "sec_per_iter": ts.sec_per_iter.mean,
                     "sec_per_iter_ci95": ts.sec_per_iter.ci95, **stat_cells(st, keys)})
    ref_rows = [r for r in rows if r["run"] == reference]
    ref_time = ref_rows[0]["sec_per_iter"] if ref_rows else NAN
    ref_label = ref_rows[0]["method"] if ref_rows else reference
    for r in rows:
        r["time_vs_ref"] = r["sec_per_iter"] / ref_time if ref_time and not _is_missing(ref_time) else NAN
    columns = method_columns() + [
        Column("nfe_old_theta", "NFE_old / NFE_θ"),
        Column("nfe_old", "NFE_old", show=False),
        Column("nfe_theta", "NFE_θ", show=False),
        Column("sec_per_iter", "Time / iter (s)", digits=2, ci=True),
        Column("time_vs_ref", f"Time vs {ref_label}", digits=2, suffix="×"),
    ] + metric_columns(grid)
    caption = (f"Toy analogue of Table 2 (training cost and in/out-of-domain quality at {grid.main_nfe} NFE): "
               "NFE_old / NFE_θ are the forward passes of the old and current policy per policy ratio, time is "
               f"seconds per training iteration and 'Time vs {ref_label}' its ratio to that row; "
               f"{seed_note(grid)}; {BASE_NOTE}.")
    return make_table("table2", rows, columns, caption)


def ablation_table(grid: Grid, results: Path, name: str, first_header: str, with_time: bool,
                   caption: str) -> Table:
    """Rows ``(label, run)`` of ``name`` with (optionally) time per iteration and metrics at ``main_nfe``."""
    keys = list(grid.metrics)
    rows = []
    for label, run in grid.rows(name):
        row: dict[str, Any] = {"method": label, "run": run, "n_seeds": len(grid.seeds)}
        if with_time:
            t = run_train_stats(results, grid, run, name).sec_per_iter
            row.update(sec_per_iter=t.mean, sec_per_iter_ci95=t.ci95)
        row.update(stat_cells(run_eval_stats(results, grid, run, grid.main_nfe, name), keys))
        rows.append(row)
    time_cols = [Column("sec_per_iter", "Time / iter (s)", digits=2, ci=True)] if with_time else []
    return make_table(name, rows, method_columns(first_header) + time_cols + metric_columns(grid), caption)


def table3(grid: Grid, results: Path) -> Table:
    return ablation_table(grid, results, "table3", "Method", False,
                          f"Toy analogue of Table 3 (component ablation: without temperature-annealed sampling, "
                          f"without step-aware advantages) at {grid.main_nfe} NFE; {seed_note(grid)}.")


def table4(grid: Grid, results: Path) -> Table:
    return ablation_table(grid, results, "table4", "N_annealed", True,
                          f"Toy analogue of Table 4 (number of temperature-annealed sampling steps): seconds per "
                          f"training iteration and quality at {grid.main_nfe} NFE; {seed_note(grid)}.")


def table5(grid: Grid, results: Path) -> Table:
    return ablation_table(grid, results, "table5", "N_adv", True,
                          f"Toy analogue of Table 5 (number of advantage-integration steps): seconds per training "
                          f"iteration and quality at {grid.main_nfe} NFE; {seed_note(grid)}.")


def table6(grid: Grid, results: Path) -> Table:
    return ablation_table(grid, results, "table6", "Reward", False,
                          f"Toy analogue of Table 6 (training-reward sensitivity: single vs combined rewards) at "
                          f"{grid.main_nfe} NFE; {seed_note(grid)}.")


def table7(grid: Grid, results: Path) -> Table:
    """Pearson r between intermediate-step and final-step rewards of the ``table7`` run.

    Per seed, r is averaged over training iterations; seeds are then aggregated (mean ± t CI;
    no CI with one seed).
    """
    run = grid.tables.get("table7") or None
    per_seed: list[dict[tuple[str, int], float]] = []
    final = 0
    for seed in (grid.seeds if run else ()):
        path = train_metrics_path(results, run, seed)
        rows = read_required_jsonl(path, f"table7, run {run!r} seed {seed}")
        means, k_final = pearson_by_step(rows, f"{path} (needed by table7, run {run!r} seed {seed})")
        per_seed.append(means)
        final = max(final, k_final)
    rewards = list(dict.fromkeys(r for means in per_seed for r, _ in means))
    steps = sorted({k for means in per_seed for _, k in means})
    out_rows = []
    for k in steps:
        row: dict[str, Any] = {"method": f"R^{k} with R^{final}", "run": run, "n_seeds": len(grid.seeds),
                               "step": k, "final_step": final}
        for r in rewards:
            st = mean_ci([means.get((r, k), NAN) for means in per_seed])
            row.update({r: st.mean, f"{r}_ci95": st.ci95})
        out_rows.append(row)
    columns = method_columns("Step reward") + [Column("step", "k", show=False),
                                                Column("final_step", "K+1", show=False)]
    columns += [Column(r, f"{r} (r)", digits=3, ci=True) for r in rewards]
    n = len(grid.seeds)
    spread = (f"mean ± 95 % CI over {n} seeds (Student t)" if n > 1 else "one seed, so no CI")
    caption = ("Toy analogue of Table 7 (validity of intermediate rewards): Pearson r across each training "
               "iteration's samples between the reward of the step-k one-step clean estimate and the final-image "
               f"reward of the {run or '(none)'} run, averaged over iterations per seed; {spread}.")
    return make_table("table7", out_rows, columns, caption)


def reference_run(grid: Grid, reference: str | None = None) -> str:
    """Table 2's time reference: given, else the run Tables 4-7 ablate (the manifest's ``table7``
    run, i.e. TAFS-GRPO), else ``tafs_grpo``."""
    return reference or grid.tables.get("table7") or "tafs_grpo"


def build_tables(grid: Grid, results: Path, reference: str | None = None) -> dict[str, Table]:
    reference = reference_run(grid, reference)
    return {
        "table1": table1(grid, results),
        "table2": table2(grid, results, reference),
        "table3": table3(grid, results),
        "table4": table4(grid, results),
        "table5": table5(grid, results),
        "table6": table6(grid, results),
        "table7": table7(grid, results),
    }


# --------------------------------------------------------------------------- figure 4 data


def figure4_frame(grid: Grid, results: Path, metric: str) -> pd.DataFrame:
    """Long frame (series, kind, sampler, nfe, mean, ci95) of ``metric`` vs NFE.

    kind is "run" (each Table-1 run over ``run_nfe`` with its eval sampler; every file required),
    "base" (the base model with the ODE sampler at the same NFEs, where evaluated) or "base_ref"
    (the base at the largest evaluated ODE NFE beyond ``run_nfe``, e.g. 28: a reference line).
    """
    rows = []
    for label, run in grid.rows("table1"):
        sampler = grid.run(run, "figure4").eval_sampler
        for nfe in grid.run_nfe:
            st = run_eval_stats(results, grid, run, nfe, "figure4")[metric]
            rows.append({"series": label, "kind": "run", "sampler": sampler, "nfe": nfe,
                         "mean": st.mean, "ci95": st.ci95})
    base_nfes = [n for n in grid.run_nfe if base_eval_path(results, "ode", n).is_file()]
    ref = [n for s, n in grid.base_evals if s == "ode" and n > max(grid.run_nfe, default=0)
           and base_eval_path(results, "ode", n).is_file()]
    for kind, nfes in (("base", base_nfes), ("base_ref", sorted(ref)[-1:])):
        for nfe in nfes:
            st = base_eval_stats(results, grid, "ode", nfe, "figure4")[metric]
            series = f"{grid.base_label} (ODE)" if kind == "base" else f"{grid.base_label} (ODE, {nfe} NFE)"
            rows.append({"series": series, "kind": kind, "sampler": "ode", "nfe": nfe,
                         "mean": st.mean, "ci95": st.ci95})
    return pd.DataFrame(rows, columns=["series", "kind", "sampler", "nfe", "mean", "ci95"])


# --------------------------------------------------------------------------- entry point


def write_all(grid_path: Path, results: Path, out_dir: Path, figure: Path | None,
              metric: str = "correct", reference: str | None = None) -> dict[str, Table]:
    """Every table (csv/md/tex) and ``captions.json`` under ``out_dir``; Figure 4 at ``figure``."""
    grid = load_grid(grid_path)
    tables = build_tables(grid, results, reference)
    for table in tables.values():
        write_table(table, out_dir)
    captions = {name: t.caption for name, t in tables.items()}
    if figure is not None:
        from tafs.report.figures import figure4_grid

        captions["figure4"] = figure4_grid(grid, results, figure, metric)
    write_json(out_dir / "captions.json", captions)
    return tables


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grid", default="results/grid.json", help="grid manifest (grid.json)")
    p.add_argument("--results", default="results", help="results root holding runs/ and eval/")
    p.add_argument("--out", default="results/tables", help="folder for table{1..7}.{csv,md,tex} and captions.json")
    p.add_argument("--figure", default="results/figures/figure4.png",
                   help="Figure 4 PNG path (a PDF is written beside it); 'none' to skip")
    p.add_argument("--metric", default="correct", help="Figure 4's main metric (a second panel shows 'dense')")
    p.add_argument("--reference", default=None,
                   help="run whose time per iteration Table 2's 'Time vs' column divides by "
                        "(default: the manifest's table7 run, else tafs_grpo)")


def run(args: argparse.Namespace) -> None:
    figure = None if str(args.figure).lower() == "none" else Path(args.figure)
    write_all(Path(args.grid), Path(args.results), Path(args.out), figure, args.metric, args.reference)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tafs.report.paper_tables",
                                description="The paper's Tables 1-7 and Figure 4 (toy analogues) from grid.json")
    add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
