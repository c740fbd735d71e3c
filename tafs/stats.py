"""Summary statistics, one implementation each: a mean with its 95 % CI, per-category breakdowns, Pearson r.

Two kinds of interval, one function:

* over seeds (a handful of training runs): Student t with n - 1 degrees of freedom (``method="t"``);
* over the images of one evaluation (hundreds): the normal approximation (``method="normal"``, z = 1.96),
  which is what every ``metrics.json`` reports.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

NAN = float("nan")
Z95 = 1.96


@dataclass(frozen=True)
class Stat:
    """A mean, the half-width of its 95 % CI (NaN when unknown) and the sample size."""

    mean: float
    ci95: float
    n: int = 0

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "ci95": self.ci95, "n": self.n}


def mean_ci(values: Sequence[float], method: str = "t", single_ci: float = NAN, confidence: float = 0.95) -> Stat:
    """Mean and CI half-width of ``values``.

    ``method="t"``: Student t (used over seeds); with one value there is no spread to estimate and
    ``single_ci`` (the caller's fallback, e.g. the evaluation's own CI) is used; any NaN value (a metric
    absent from one seed's file) makes the whole result NaN rather than silently averaging fewer values.
    ``method="normal"``: mean ± z * s / sqrt(n) with z = 1.96 (0 for n = 1; NaN for n = 0).
    """
    v = np.asarray(list(values), dtype=float)
    if method == "normal":
        return _normal(list(map(float, values)))
    if method != "t":
        raise ValueError(f"method must be 't' or 'normal', got {method!r}")
    if v.size == 0 or np.isnan(v).any():
        return Stat(NAN, NAN, int(v.size))
    if v.size == 1:
        return Stat(float(v[0]), float(single_ci), 1)
    from scipy import stats

    half = stats.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return Stat(float(v.mean()), float(half), int(v.size))


def _normal(values: list[float]) -> Stat:
    n = len(values)
    if n == 0:
        return Stat(NAN, NAN, 0)
    m = sum(values) / n
    if n < 2:
        return Stat(m, 0.0, n)
    var = sum((x - m) ** 2 for x in values) / (n - 1)
    return Stat(m, Z95 * math.sqrt(var / n), n)


def category_mean_ci(categories: Sequence[str], values: Sequence[float]) -> Stat:
    """The mean of the per-category means (GenEval's overall score: each tag counts once, whatever its number
    of prompts), with the stratified normal CI: var = sum_c s_c^2 / n_c / C^2."""
    groups: dict[str, list[float]] = defaultdict(list)
    for c, v in zip(categories, values):
        groups[c].append(float(v))
    if not groups:
        return Stat(NAN, NAN, 0)
    means = [sum(v) / len(v) for v in groups.values()]
    var = sum(float(np.var(v, ddof=1)) / len(v) if len(v) > 1 else 0.0 for v in groups.values()) / len(groups) ** 2
    return Stat(sum(means) / len(means), Z95 * math.sqrt(var), len(values))


def by_category(categories: Sequence[str], values: Sequence[float]) -> dict[str, dict[str, float]]:
    """``{category: {mean, ci95, n}}`` (normal CI) over the values of each category, sorted by name."""
    groups: dict[str, list[float]] = defaultdict(list)
    for c, v in zip(categories, values):
        groups[c].append(v)
    return {c: mean_ci(v, "normal").as_dict() for c, v in sorted(groups.items())}


def pearson(a: "torch.Tensor", b: "torch.Tensor") -> float:
    """Pearson r of two 1-D tensors, in float64; NaN when either is constant (r is undefined)."""
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else NAN
