"""The one mean_ci (normal over images, Student t over seeds), per-category breakdowns, Pearson r."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from tafs.stats import Stat, by_category, mean_ci, pearson


def test_normal_ci_by_hand():
    # mean 2.5; sample variance ((1.5^2 + 0.5^2) * 2) / 3 = 5/3; ci = 1.96 sqrt(5/3 / 4)
    r = mean_ci([1.0, 2.0, 3.0, 4.0], "normal")
    assert r.n == 4 and r.mean == pytest.approx(2.5)
    assert r.ci95 == pytest.approx(1.96 * math.sqrt(5 / 12))


def test_normal_ci_small_n():
    assert mean_ci([0.7], "normal").as_dict() == {"mean": 0.7, "ci95": 0.0, "n": 1}
    r = mean_ci([], "normal")
    assert r.n == 0 and math.isnan(r.mean) and math.isnan(r.ci95)
    assert mean_ci([2.0, 2.0, 2.0], "normal").ci95 == 0.0


def test_t_ci_by_hand():
    # 3 seeds: t_{0.975, 2} = 4.302653; sd of [1, 2, 4] = sqrt(7/3)
    r = mean_ci([1.0, 2.0, 4.0])
    assert r.mean == pytest.approx(7 / 3)
    assert r.ci95 == pytest.approx(4.302653 * math.sqrt(7 / 3) / math.sqrt(3), rel=1e-6)
    assert r.ci95 == pytest.approx(sps.t.ppf(0.975, 2) * np.std([1, 2, 4], ddof=1) / math.sqrt(3))


def test_t_ci_one_value_uses_the_fallback_and_nan_poisons():
    assert mean_ci([0.4], single_ci=0.05) == Stat(0.4, 0.05, 1)
    assert math.isnan(mean_ci([0.4]).ci95)
    r = mean_ci([0.1, float("nan"), 0.3])
    assert math.isnan(r.mean) and math.isnan(r.ci95)


def test_unknown_method():
    with pytest.raises(ValueError, match="method"):
        mean_ci([1.0], "bootstrap")


def test_by_category():
    r = by_category(["b", "a", "b", "a", "a"], [1.0, 0.0, 0.0, 1.0, 1.0])
    assert list(r) == ["a", "b"]
    assert r["a"]["mean"] == pytest.approx(2 / 3) and r["a"]["n"] == 3
    assert r["b"]["mean"] == pytest.approx(0.5)
    # [1, 0]: variance 0.5, ci = 1.96 sqrt(0.5 / 2) = 0.98
    assert r["b"]["ci95"] == pytest.approx(0.98)


def test_pearson_against_numpy_and_constant():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, generator=g), torch.randn(50, generator=g)
    b = 0.6 * a + b
    assert pearson(a, b) == pytest.approx(float(np.corrcoef(a.numpy(), b.numpy())[0, 1]), abs=1e-9)
    assert pearson(a, -2 * a) == pytest.approx(-1.0)
    assert math.isnan(pearson(a, torch.ones(50)))
