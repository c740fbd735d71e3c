"""The gradient-SNR benchmark (bench/gradient_snr.py): its statistic on synthetic gradients, and a tiny
end-to-end run on the shipped toy base."""

from __future__ import annotations

import csv
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bench():
    """bench/ is not a package: load the file by path (once per session)."""
    name = "tafs_bench_gradient_snr"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "gradient_snr.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_pure_noise_has_no_signal(bench):
    """Zero-mean gradients: the signal estimate averages to 0, z to 1, and the CI covers 0 about 95 % of the time."""
    rng = np.random.default_rng(0)
    m, d, draws = 32, 200, 200
    scale = rng.uniform(0.2, 2.0, d)  # anisotropic noise
    signal, z, covered = [], [], []
    for i in range(draws):
        st = bench.snr_stats(rng.normal(size=(m, d)) * scale, group_size=8, n_boot=200, seed=i)
        signal.append(st["signal_sq"] / (st["noise_tr"] / m))  # in units of the noise of gbar
        z.append(st["z"])
        covered.append(st["snr_ci_lo"] <= 0 <= st["snr_ci_hi"])
        assert st["z"] == pytest.approx(1 + m * st["per_group_snr"])
    assert abs(np.mean(signal)) < 0.05, np.mean(signal)
    assert np.mean(z) == pytest.approx(1.0, abs=0.05)
    assert 0.85 <= np.mean(covered) <= 1.0, np.mean(covered)


def test_known_mean_plus_noise(bench):
    """SNR = ||mu||^2 / tr(Sigma) by construction; the statistic's formulas match the direct ones on the sample."""
    rng = np.random.default_rng(1)
    m, d = 2000, 50
    std = rng.uniform(0.5, 1.5, d)
    mu = rng.normal(size=d)
    mu *= np.sqrt(0.1 * (std ** 2).sum()) / np.linalg.norm(mu)  # true per-group SNR 0.1
    true_snr = (mu ** 2).sum() / (std ** 2).sum()
    g = mu + rng.normal(size=(m, d)) * std
    st = bench.snr_stats(torch.tensor(g, dtype=torch.float32), group_size=8, n_boot=300, seed=0)
    assert st["per_group_snr"] == pytest.approx(true_snr, rel=0.1)
    assert st["snr_ci_lo"] <= true_snr <= st["snr_ci_hi"]
    # by hand: gbar, tr(Sigma) = M/(M-1) mean ||g_i - gbar||^2, ||mu||^2 = ||gbar||^2 - tr/M
    gbar = g.mean(0)
    tr = ((g - gbar) ** 2).sum(1).mean() * m / (m - 1)
    sig = gbar @ gbar - tr / m
    assert st["noise_tr"] == pytest.approx(tr, rel=1e-5)
    assert st["signal_sq"] == pytest.approx(sig, rel=1e-4)
    assert st["z"] == pytest.approx(gbar @ gbar / (tr / m), rel=1e-5)
    assert st["samples_for_snr1"] == pytest.approx(8 * tr / sig, rel=1e-4)
    assert st["z"] > 50  # M * SNR = 200: far from noise


def test_end_to_end_tiny(bench, tmp_path):
    t0 = time.time()
    out = tmp_path / "snr.csv"
    argv = ["--groups", "4", "--group", "4", "--batch-prompts", "2", "--modes", "integrated", "to_go",
            "--bootstrap", "50", "--samples-per-step", "16", "64", "--out", str(out)]
    rows = bench.main(argv)
    assert time.time() - t0 < 30
    k = 3  # config.yaml's tafs_grpo: the annealed chain, K = 3
    assert len(rows) == 2 * (k + 1) * 2
    assert {(r["mode"], str(r["action"]), r["control"]) for r in rows} == {
        (mode, a, c) for mode in ("integrated", "to_go") for a in ("0", "1", "2", "all") for c in ("real", "shuffled")}
    for r in rows:
        assert r["groups"] == 4 and r["G"] == 4 and r["task"] == "toy_composition" and r["method"] == "tafs_grpo"
        assert np.isfinite(r["per_group_snr"]) and r["noise_tr"] > 0  # LoRA at init: gradients exist
        assert r["step_snr_n64"] == pytest.approx(r["per_group_snr"] * 64 / 4)
        assert r["snr_ci_lo"] <= r["snr_ci_hi"]
        assert r["max_ratio_dev"] < 1e-4  # the fixed policy: ratio 1, the plain REINFORCE gradient
        if r["control"] == "real":
            assert r["diff_ci_lo"] <= r["diff_ci_hi"]
    # the first action's real weights are the same in both modes (to_go from step 1 = all integrated steps)
    first = {r["mode"]: r["noise_tr"] for r in rows if r["action"] == 0 and r["control"] == "real"}
    assert first["integrated"] == pytest.approx(first["to_go"], rel=1e-6)
    with open(out, newline="") as fh:
        read = list(csv.DictReader(fh))
    assert len(read) == len(rows) and "--groups 4" in read[0]["command"]
    md = out.with_suffix(".md").read_text()
    assert "bench/gradient_snr.py --groups 4" in md and md.count("| tafs_grpo |") == 2 * (k + 1)
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    assert out.stat().st_mode & 0o777 == 0o644
    # --append: a rerun of one mode replaces its rows and keeps the other mode's
    again = bench.main([*argv[:7], "integrated", "--bootstrap", "0", "--seed", "1", "--out", str(out), "--append"])
    with open(out, newline="") as fh:
        read = list(csv.DictReader(fh))
    assert len(read) == len(rows) and len(again) == (k + 1) * 2
    assert {r["seed"] for r in read if r["mode"] == "integrated"} == {"1"}
    assert {r["seed"] for r in read if r["mode"] == "to_go"} == {"0"}
    assert out.with_suffix(".md").read_text().count("| tafs_grpo |") == 2 * (k + 1)
