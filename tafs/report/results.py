"""What the tables read from a results folder: evaluations and training summaries, aggregated over seeds.

Seeds are aggregated as mean and 95 % CI half-width with the t distribution (``tafs.stats.mean_ci``). With
a single seed there is no between-seed spread, so evaluation cells fall back to the evaluation's own CI over
test images and training quantities get no CI. The base model is not trained: its rows carry the
evaluation's CI. Every path comes from ``tafs.paths.Layout``.
"""

from __future__ import annotations

import errno
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tafs.io import read_jsonl
from tafs.paths import Layout, ModelRef
from tafs.report.manifest import Manifest, read_required_json
from tafs.stats import NAN, Stat, mean_ci

_PEARSON_KEY = re.compile(r"^reward/(?P<reward>.+)/step(?P<k>\d+)_pearson_final$")
_STEP_MEAN_KEY = re.compile(r"^reward/(?P<reward>.+)/step(?P<k>\d+)_mean$")


@dataclass(frozen=True)
class EvalKey:
    """A table column of evaluation results: ``metric``, or ``metric`` restricted to one ``category``."""

    column: str
    metric: str
    category: str | None = None


def category_column(metric: str, category: str) -> str:
    return f"{metric}_{category}"


def eval_keys(m: Manifest, categories: bool) -> list[EvalKey]:
    keys = [EvalKey(k, k) for k in m.metrics]
    if categories and m.category_metric:
        keys += [EvalKey(category_column(m.category_metric, c), m.category_metric, c) for c in m.categories]
    return keys


def eval_values(data: dict, keys: list[EvalKey]) -> dict[str, Stat]:
    """(mean, ci95) of each key from one ``metrics.json``; an absent metric or category is NaN."""
    metrics = data.get("metrics", {})
    out: dict[str, Stat] = {}
    for key in keys:
        entry = metrics.get(key.metric)
        if entry is not None and key.category is not None:
            entry = entry.get("by_category", {}).get(key.category)
        out[key.column] = Stat(float(entry["mean"]), float(entry.get("ci95", NAN))) if entry else Stat(NAN, NAN)
    return out


def run_eval_stats(results: Path, m: Manifest, run: str, nfe: int, need: str,
                   categories: bool = False, sampler: str | None = None) -> dict[str, Stat]:
    """A run's evaluation at one NFE with ``sampler`` (default: its own eval sampler), aggregated over the
    run's seeds (``Manifest.seeds_of``)."""
    spec, layout = m.run(run, need), Layout(results)
    sampler = sampler or spec.eval_sampler
    keys = eval_keys(m, categories)
    per_seed = []
    for seed in m.seeds_of(run):
        path = layout.eval_metrics(ModelRef.run(run, seed), sampler, nfe)
        data = read_required_json(path, f"{need}, run {run!r} seed {seed} ({sampler}, NFE {nfe})")
        per_seed.append(eval_values(data, keys))
    one = len(per_seed) == 1
    return {k.column: mean_ci([s[k.column].mean for s in per_seed], single_ci=per_seed[0][k.column].ci95 if one
                              else NAN) for k in keys}


def base_eval_path(results: Path, sampler: str, nfe: int) -> Path:
    return Layout(results).eval_metrics(ModelRef.base(), sampler, nfe)


def base_eval_stats(results: Path, m: Manifest, sampler: str, nfe: int, need: str,
                    categories: bool = False) -> dict[str, Stat]:
    """The (untrained, unseeded) base model's evaluation: its own CI over test images."""
    data = read_required_json(base_eval_path(results, sampler, nfe), f"{need}, base model ({sampler}, NFE {nfe})")
    return eval_values(data, eval_keys(m, categories))


def baseline_eval_stats(results: Path, m: Manifest, name: str, nfe: int, need: str,
                        categories: bool = False) -> dict[str, Stat]:
    """An evaluation-only model (its own pipeline call): its own CI over test images."""
    path = Layout(results).eval_metrics(ModelRef.baseline(name), "pipeline", nfe)
    data = read_required_json(path, f"{need}, baseline {name!r} (NFE {nfe})")
    return eval_values(data, eval_keys(m, categories))


def model_eval_options(results: Path, m: Manifest, model: str, nfe: int, need: str, categories: bool = False,
                       samplers: tuple[str, ...] | None = None) -> list[tuple[str, dict[str, Stat]]]:
    """(sampler, stats) of a model ("base" or a run) at one NFE under each sampler it was evaluated with."""
    out = []
    for sampler in samplers or m.samplers_of(model):
        stats = (base_eval_stats(results, m, sampler, nfe, need, categories) if model == "base" else
                 run_eval_stats(results, m, model, nfe, need, categories, sampler))
        out.append((sampler, stats))
    return out


@dataclass(frozen=True)
class TrainStats:
    sec_per_iter: Stat
    nfe_old: int
    nfe_theta: int


def run_train_stats(results: Path, m: Manifest, run: str, need: str) -> TrainStats:
    """Seconds per iteration (mean ± CI over seeds; no CI with one seed) and the policy-ratio NFEs."""
    layout = Layout(results)
    summaries = [read_required_json(layout.train_summary(run, s), f"{need}, run {run!r} seed {s}") for s in m.seeds_of(run)]
    nfes = {(int(t["nfe_old"]), int(t["nfe_theta"])) for t in summaries}
    if len(nfes) != 1:
        raise ValueError(f"run {run!r} (needed by {need}): seeds disagree on NFE_old / NFE_theta: {sorted(nfes)}")
    (nfe_old, nfe_theta), = nfes
    return TrainStats(mean_ci([float(t["sec_per_iter"]) for t in summaries]), nfe_old, nfe_theta)


def read_train_curves(results: Path, run: str, seed: int, need: str) -> tuple[list[dict], Path]:
    path = Layout(results).train_metrics(run, seed)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, f"missing file needed by {need}", str(path))
    return read_jsonl(path), path


def pearson_by_step(rows: list[dict], source: str) -> tuple[dict[tuple[str, int], float], int]:
    """Mean over iterations of each ``reward/R/step{k}_pearson_final``, and the final step K+1.

    Iterations where r is undefined (null/NaN, e.g. a group with constant reward) are skipped.
    """
    values: dict[tuple[str, int], list[float]] = {}
    final = 0
    for row in rows:
        for key, value in row.items():
            if (match := _STEP_MEAN_KEY.match(key)) is not None:
                final = max(final, int(match["k"]))
            elif (match := _PEARSON_KEY.match(key)) is not None:
                bucket = values.setdefault((match["reward"], int(match["k"])), [])
                if value is not None and not math.isnan(float(value)):
                    bucket.append(float(value))
    if not values:
        raise ValueError(f"{source}: no 'reward/<R>/step<k>_pearson_final' keys in any iteration")
    means = {key: (float(np.mean(v)) if v else NAN) for key, v in values.items()}
    return means, max(final, 1 + max(k for _, k in means))


def unscored(results: Path) -> dict[str, tuple[int, int]]:
    """metric -> (images a reward could not score, images evaluated) over every evaluation of the folder: the
    tables say so beside their means (e.g. a judge's unparsable answers), instead of hiding it."""
    counts: dict[str, list[int]] = {}
    for path in sorted(Path(results, "eval").rglob("metrics.json")):
        data = read_required_json(path, "the unscored-images note")
        for key, entry in data.get("metrics", {}).items():
            c = counts.setdefault(key, [0, 0])
            c[0] += int(entry.get("invalid", 0))
            c[1] += int(data.get("n", 0))
    return {k: (bad, n) for k, (bad, n) in counts.items() if bad}
