"""Compare two results folders number by number: every evaluation's metrics.json, every training curve and
every table cell. For checking that a change left the results alone, or that a re-run reproduces them.

``python -m tafs compare-results OLD NEW [--tol 0]`` prints one line per kind of file and every
difference above ``--tol``; it exits 1 when something differs or is missing.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from tafs.io import read_json, read_jsonl
from tafs.paths import Layout

TIME_KEYS = ("wall_s", "time_", "sec_per_iter", "time_vs_ref")  # wall-clock numbers differ by nature


@dataclass
class Report:
    compared: dict[str, int] = field(default_factory=dict)  # kind -> numbers compared
    diffs: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    max_abs: float = 0.0

    def number(self, kind: str, where: str, a: Any, b: Any, tol: float) -> None:
        self.compared[kind] = self.compared.get(kind, 0) + 1
        if _nan(a) and _nan(b):
            return
        if _nan(a) or _nan(b) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
            if a != b:
                self.diffs.append(f"{where}: {a!r} != {b!r}")
            return
        d = abs(float(a) - float(b))
        self.max_abs = max(self.max_abs, d)
        if d > tol:
            self.diffs.append(f"{where}: {a!r} vs {b!r} (|diff| {d:.3g})")


def _nan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def leaves(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Scalar leaves of nested dicts/lists, keyed by their path."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, f"{prefix}/{k}" if prefix else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def _timing(key: str) -> bool:
    return any(t in part for part in key.split("/")[-2:] for t in TIME_KEYS)  # e.g. time_reward/clip_s


def compare_evals(old: Layout, new: Layout, rep: Report, tol: float) -> None:
    olds = {(e.model.key, e.sampler, e.nfe): e.folder for e in old.finished_evals()}
    news = {(e.model.key, e.sampler, e.nfe): e.folder for e in new.finished_evals()}
    rep.missing += [f"eval {k} only in {old.root}" for k in sorted(set(olds) - set(news))]
    rep.missing += [f"eval {k} only in {new.root}" for k in sorted(set(news) - set(olds))]
    for key in sorted(set(olds) & set(news)):
        a, b = read_json(olds[key] / "metrics.json"), read_json(news[key] / "metrics.json")
        la = dict(leaves({k: a.get(k) for k in ("n", "metrics", "chance")}))
        lb = dict(leaves({k: b.get(k) for k in ("n", "metrics", "chance")}))
        for path in sorted(set(la) | set(lb)):
            rep.number("evaluation numbers (metrics.json)", f"eval {key} {path}", la.get(path), lb.get(path), tol)


def compare_training(old: Layout, new: Layout, rep: Report, tol: float) -> None:
    olds = {(r, s): f for r, s, f in old.finished_runs()}
    news = {(r, s): f for r, s, f in new.finished_runs()}
    rep.missing += [f"run {k} only in {old.root}" for k in sorted(set(olds) - set(news))]
    rep.missing += [f"run {k} only in {new.root}" for k in sorted(set(news) - set(olds))]
    for key in sorted(set(olds) & set(news)):
        rows_a, rows_b = read_jsonl(olds[key] / "metrics.jsonl"), read_jsonl(news[key] / "metrics.jsonl")
        if len(rows_a) != len(rows_b):
            rep.diffs.append(f"run {key}: {len(rows_a)} vs {len(rows_b)} iterations")
        for ra, rb in zip(rows_a, rows_b):
            for k in sorted(set(ra) | set(rb)):
                if not _timing(k):
                    rep.number("training curve numbers (metrics.jsonl)", f"run {key} it {ra.get('iteration')} {k}",
                               ra.get(k), rb.get(k), tol)


def compare_tables(old: Layout, new: Layout, rep: Report, tol: float) -> None:
    for path in sorted(old.tables_dir.glob("table*.csv")):
        other = new.tables_dir / path.name
        if not other.is_file():
            rep.missing.append(f"{other} missing")
            continue
        a, b = pd.read_csv(path), pd.read_csv(other)
        if list(a.columns) != list(b.columns) or len(a) != len(b):
            rep.diffs.append(f"{path.name}: columns or rows differ ({list(a.columns)} x {len(a)} vs "
                             f"{list(b.columns)} x {len(b)})")
            continue
        for col in a.columns:
            if _timing(col):
                continue
            for i, (x, y) in enumerate(zip(a[col], b[col])):
                x = x.item() if hasattr(x, "item") else x
                y = y.item() if hasattr(y, "item") else y
                rep.number("table cells (tables/*.csv)", f"{path.name} row {i} {col}", x, y, tol)


def compare(old: str | Path, new: str | Path, tol: float = 0.0) -> Report:
    rep = Report()
    a, b = Layout(old), Layout(new)
    compare_evals(a, b, rep, tol)
    compare_training(a, b, rep, tol)
    compare_tables(a, b, rep, tol)
    return rep


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tafs compare-results", description=__doc__.split("\n\n")[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--tol", type=float, default=0.0, help="largest absolute difference that counts as equal")
    p.add_argument("--show", type=int, default=20, help="differences to print")
    a = p.parse_args(argv)
    rep = compare(a.old, a.new, a.tol)
    for kind, n in rep.compared.items():
        print(f"{kind}: {n} compared")
    print(f"largest absolute difference: {rep.max_abs:.3g}; above tol {a.tol:g}: {len(rep.diffs)}; "
          f"missing: {len(rep.missing)}")
    for line in (rep.missing + rep.diffs)[: a.show]:
        print("  " + line)
    if rep.diffs or rep.missing:
        sys.exit(1)
    return 0
