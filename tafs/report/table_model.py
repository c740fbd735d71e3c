"""A table as data (pandas) plus how each column is shown; written as CSV (numbers), Markdown and LaTeX.

CSV columns are ``<col>`` and ``<col>_ci95``; Markdown and LaTeX show ``mean ± ci``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from tafs.io import atomic_path
from tafs.report.manifest import Manifest
from tafs.report.results import category_column
from tafs.stats import NAN, Stat

_LATEX_SYMBOLS = {"±": r"$\pm$", "θ": r"$\theta$", "×": r"$\times$"}


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
    heading: str = ""  # bold lead of the Markdown version, e.g. "Table 1 (toy analogue)"
    shown: str | None = None  # a boolean CSV column: only its True rows are in md/tex (the CSV keeps all)


def make_table(name: str, rows: list[dict], columns: list[Column], caption: str, heading: str = "",
               shown: str | None = None) -> Table:
    """Rows (dicts keyed by CSV column) into a Table whose CSV schema is fixed even with no rows."""
    keys = [k for c in columns for k in c.csv_keys]
    return Table(name, pd.DataFrame(rows, columns=keys), columns, caption, heading or name, shown)


def stat_cells(values: dict[str, Stat], keys: Sequence[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in keys:
        out[k] = values[k].mean
        out[f"{k}_ci95"] = values[k].ci95
    return out


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_text(value: Any) -> str:
    if is_missing(value):
        return "-"
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def format_stat(mean: float, ci: float, scale: float, digits: int, suffix: str = "") -> str:
    """``mean ± ci`` (scaled); only the mean when the CI is unknown; ``-`` when the mean is."""
    if is_missing(mean):
        return "-"
    text = f"{mean * scale:.{digits}f}{suffix}"
    if not is_missing(ci):
        text += f" ± {ci * scale:.{digits}f}"
    return text


def display_frame(table: Table) -> pd.DataFrame:
    """Formatted strings with (group, header) MultiIndex columns, for md and tex."""
    shown = [c for c in table.columns if c.show]
    data = table.data[table.data[table.shown].astype(bool)] if table.shown else table.data
    cells: dict[tuple[str, str], list[str]] = {}
    for c in shown:
        if c.digits is None:
            cells[(c.group, c.header)] = [format_text(v) for v in data[c.key]]
        else:
            ci = data[f"{c.key}_ci95"] if c.ci else [NAN] * len(data)
            cells[(c.group, c.header)] = [format_stat(m, e, c.scale, c.digits, c.suffix)
                                          for m, e in zip(data[c.key], ci)]
    return pd.DataFrame(cells, columns=pd.MultiIndex.from_tuples([(c.group, c.header) for c in shown]))


def to_markdown(table: Table) -> str:
    frame = display_frame(table)
    frame.columns = [f"{h} [{g}]" if g else h for g, h in frame.columns]
    # disable_numparse: keep row labels such as "1" / "3" (Tables 4, 5) as text, left-aligned
    body = frame.to_markdown(index=False, disable_numparse=True)
    return f"**{table.heading}.** {table.caption}\n\n{body}\n"


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


# --------------------------------------------------------------------------- columns


def metric_format(m: Manifest, metric: str) -> tuple[float, int]:
    """(scale, decimals): % with 1 decimal for fractions (the task says which), 3 decimals otherwise."""
    return (100.0, 1) if metric in m.percent else (1.0, 3)


def metric_header(m: Manifest, metric: str) -> str:
    scale, _ = metric_format(m, metric)
    return m.label(metric) + (" (%)" if scale == 100.0 else "")


def metric_columns(m: Manifest, categories: bool = False) -> list[Column]:
    """In-domain, then out-of-domain metrics, then (optionally) the category metric per category."""
    cols = []
    for group, metrics in (("in-domain", m.metrics_in), ("out-of-domain", m.metrics_out)):
        for key in metrics:
            scale, digits = metric_format(m, key)
            cols.append(Column(key, metric_header(m, key), group, scale, digits, ci=True))
    if categories and m.category_metric:
        scale, digits = metric_format(m, m.category_metric)
        cols += [Column(category_column(m.category_metric, c), c.replace("_", " "), m.category_label, scale, digits,
                        ci=True) for c in m.categories]
    return cols


def method_columns(header: str = "Method", m: Manifest | None = None, runs: tuple[str, ...] | list[str] = ()) -> list[Column]:
    """Method, run and seed count; the Seeds column is shown when the rows' seed counts differ
    (``ablations.seeds``)."""
    mixed = m is not None and len({len(m.seeds_of(r)) for r in runs}) > 1
    return [Column("method", header), Column("run", "Run", show=False), Column("n_seeds", "Seeds", show=mixed)]


def sampler_columns() -> list[Column]:
    """The sampler of a row and whether it is the one the model's method declares (the row md/tex show; the CSV
    also keeps the other samplers' rows, declared false)."""
    return [Column("sampler", "Sampler"), Column("declared", "Declared sampler", show=False)]


def seed_note(m: Manifest, runs: list[str]) -> str:
    """What ± means over the table's trained rows (``runs``), whose seed counts may differ."""
    counts = sorted({len(m.seeds_of(r)) for r in runs} or {len(m.seeds)})
    if len(counts) > 1:
        return (f"rows are trained at {' or '.join(map(str, counts))} seeds (Seeds column; ablation-only rows use "
                "ablations.seeds): ± is the 95 % CI half-width of the mean over a row's seeds (Student t), or the "
                "evaluation's 95 % CI over test images for a one-seed row, whose time has no CI")
    n = counts[0]
    if n == 1:
        return ("one training seed, so ± is the evaluation's 95 % CI over test images "
                "and training quantities (time) have no CI")
    return f"± is the 95 % CI half-width of the mean over {n} training seeds (Student t, {n - 1} d.o.f.)"


BASE_NOTE = "the base model row's ± is its evaluation's 95 % CI over test images"
