"""Summary statistics: mean with a 95 % confidence interval, per-category breakdowns."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence


def mean_ci(values: Sequence[float], z: float = 1.96) -> dict[str, float]:
    """Mean and the half-width of a normal-approximation 95 % CI (0 for n < 2)."""
    n = len(values)
    if n == 0:
        return {"mean": float("nan"), "ci95": float("nan"), "n": 0}
    m = sum(values) / n
    if n < 2:
        return {"mean": m, "ci95": 0.0, "n": n}
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    return {"mean": m, "ci95": z * math.sqrt(var / n), "n": n}


def by_category(categories: Sequence[str], values: Sequence[float]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[float]] = defaultdict(list)
    for c, v in zip(categories, values):
        groups[c].append(v)
    return {c: mean_ci(v) for c, v in sorted(groups.items())}
