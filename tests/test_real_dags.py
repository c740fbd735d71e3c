"""The DAG end to end on tiny random pipelines of the real classes (CPU, minutes): TAFS-GRPO and Flow-GRPO for 2
iterations, the evaluation sweep, Tables 1-2, Figure 4, MLflow.

- SD3: the base model is named by hub id and fetched by the download rule from a hub-compatible server on
  127.0.0.1; a second run asks the hub for nothing.
- Flux: the tiny_flux preset as it ships (the DAG builds the tiny pipeline), plus a LoRA baseline of Table 1 (a
  tiny FluxPipeline with a random LoRA fused at a scale) evaluated through its own pipeline call.
"""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import yaml

from dag_utils import run_snakemake, scratch_workflow
from hub_server import FakeHub
from tafs.models.tiny import build_tiny_lora, build_tiny_pipeline

pytestmark = pytest.mark.slow
FAST = {"methods": {"flow_grpo": {"train": {"method": {"n_steps": 4}}}},  # 4 SDE steps: CI time
        "eval": {"per_category": 1, "batch_size": 16}, "results": "results"}


def _preset(wf, name: str, **extra) -> dict:
    cfg = yaml.safe_load((wf / "workflow" / "presets" / f"{name}.yaml").read_text())
    for key, value in {**FAST, **extra}.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) and key != "model" else value
    return cfg


def _check_results(results, baselines=()):
    t1 = pd.read_csv(results / "tables" / "table1.csv")
    assert {"TAFS-GRPO", "Flow-GRPO", "Base", *baselines} <= set(t1["method"])
    t2 = pd.read_csv(results / "tables" / "table2.csv")
    t2 = t2[t2["best"]]  # the rows the md shows: each model with its better sampler (the base has two in the CSV)
    assert list(t2["method"]) == ["Base", "Flow-GRPO", "TAFS-GRPO"] and t2["sec_per_iter"].iloc[1:].gt(0).all()
    for run in ("tafs_grpo", "flow_grpo"):
        s = json.loads((results / "runs" / run / "seed0" / "train_summary.json").read_text())
        assert s["iterations"] == 2 and (results / "runs" / run / "seed0" / "adapter" /
                                         "pytorch_lora_weights.safetensors").is_file()
    assert (results / "figures" / "figure4.png").stat().st_size > 5000
    ingest = json.loads((results / "mlflow" / "ingest.json").read_text())
    assert ingest["created"] >= 8 and ingest["total_runs"] == ingest["created"]


def test_sd3_downloaded_from_the_hub_once(tmp_path):
    wf = scratch_workflow(tmp_path)
    src = build_tiny_pipeline("sd3", tmp_path / "hub_repo")
    cfg = _preset(wf, "tiny_sd3", hub={"cache": "hub_cache"},
                  model={"pretrained": {"hub": "acme/tiny-sd3", "revision": "main"}, "resolution": 32,
                         "max_sequence_length": 32})
    (wf / "run.yaml").write_text(yaml.safe_dump(cfg))
    with FakeHub({"acme/tiny-sd3": src}) as hub:
        old = os.environ.get("HF_ENDPOINT")
        os.environ["HF_ENDPOINT"] = hub.url
        try:
            res = run_snakemake(wf, "--cores", "2", "--configfile", "run.yaml")
            assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-4000:]
            served = len(hub.requests)
            assert served > 5 and (wf / "hub_cache" / "acme--tiny-sd3@main" / "model_index.json").is_file()
            again = run_snakemake(wf, "--cores", "2", "--configfile", "run.yaml")
            assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
            assert len(hub.requests) == served  # the second run asked the hub for nothing
        finally:
            os.environ.pop("HF_ENDPOINT")
            if old is not None:
                os.environ["HF_ENDPOINT"] = old
    _check_results(wf / "results")
    summary = json.loads((wf / "results/runs/tafs_grpo/seed0/train_summary.json").read_text())
    assert summary["shift"] == 3.0  # SD3's own static shift


def test_flux_preset_with_a_lora_baseline(tmp_path):
    wf = scratch_workflow(tmp_path)
    other = build_tiny_pipeline("flux", tmp_path / "flux_dev", seed=1)
    build_tiny_lora(other, tmp_path / "flux_lora", seed=2)
    baseline = {"label": "Tiny Flux + LoRA", "model": str(other), "nfe": [4, 8], "guidance_scale": 3.5,
                "resolution": 32, "pipeline_kwargs": {"max_sequence_length": 32},
                "lora": {"model": str(tmp_path / "flux_lora"), "scale": 0.125}}
    cfg = _preset(wf, "tiny_flux")
    cfg["baselines"]["tiny_lora"] = baseline
    (wf / "run.yaml").write_text(yaml.safe_dump(cfg))
    res = run_snakemake(wf, "--cores", "2", "--configfile", "run.yaml")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-4000:]
    results = wf / "results"
    _check_results(results, baselines=("Tiny Flux (pipeline)", "Tiny Flux + LoRA"))
    m = json.loads((results / "eval/baselines/tiny_lora/pipeline/nfe8/metrics.json").read_text())
    assert m["sampler"] == "pipeline" and m["nfe"] == 8 and set(m["metrics"]) == {"correct", "dense", "clip"}
    summary = json.loads((results / "runs/tafs_grpo/seed0/train_summary.json").read_text())
    assert 1.4 < summary["shift"] < 1.7  # Flux's resolution-dependent shift at 32 px (64 tokens)
