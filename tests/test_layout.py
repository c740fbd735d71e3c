"""The results layout: one module names every path, and finds what exists."""

from __future__ import annotations

import pytest

from tafs.paths import Layout, ModelRef


def test_paths_and_wildcards_pass_through():
    L = Layout("results")
    assert str(L.prompts("train")) == "results/prompts/train.jsonl"
    assert str(L.train_summary("{run}", "{seed}")) == "results/runs/{run}/seed{seed}/train_summary.json"
    assert str(L.eval_metrics(ModelRef.base(), "ode", 28)) == "results/eval/base/ode/nfe28/metrics.json"
    run = ModelRef.run("tafs_grpo", 2)
    assert str(L.eval_samples(run, "annealed", 4)) == "results/eval/runs/tafs_grpo/seed2/annealed/nfe4/samples.png"
    assert str(L.eval_sweep(ModelRef.baseline("flux-schnell"), "pipeline")) == \
        "results/eval/baselines/flux-schnell/pipeline"
    assert str(L.run_checkpoints("x", 0)) == "results/checkpoints/runs/x/seed0"
    assert L.mlflow_uri == "sqlite:///results/mlflow.db"
    with pytest.raises(ValueError, match="model kind"):
        ModelRef("lora", "x")


def test_discovery_finds_every_model_kind_and_skips_temporaries(tmp_path):
    L = Layout(tmp_path)
    made = [(ModelRef.base(), "ode", 28), (ModelRef.base(), "ode", 4), (ModelRef.run("r", 0), "annealed", 8),
            (ModelRef.run("r", 1), "annealed", 8), (ModelRef.baseline("b"), "pipeline", 4)]
    for model, sampler, nfe in made:
        L.eval_metrics(model, sampler, nfe).parent.mkdir(parents=True)
        L.eval_metrics(model, sampler, nfe).write_text("{}")
    (tmp_path / "eval" / "base" / "ode" / ".nfe8.tmp").mkdir()  # an unfinished atomic write
    (tmp_path / "eval" / "base" / "ode" / "nfe16").mkdir()  # no metrics.json yet
    found = [(e.model, e.sampler, e.nfe) for e in L.finished_evals()]
    assert found == [(ModelRef.base(), "ode", 4), (ModelRef.base(), "ode", 28), *made[2:]]
    L.run_dir("r", 1).mkdir(parents=True)
    L.train_summary("r", 1).write_text("{}")
    L.run_dir("r", 0).mkdir(parents=True, exist_ok=True)  # a run folder without a summary: not finished
    assert [(r, s) for r, s, _ in L.finished_runs()] == [("r", 1)]
