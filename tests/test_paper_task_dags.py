"""The paper's two tasks through the whole DAG on the CPU: tiny random pipelines of the real classes trained and
evaluated with tiny random reward models of the real classes (PickScore, CLIP, HPSv2.1, ImageReward, GenEval's
Mask2Former + CLIP, UnifiedReward's Qwen2.5-VL), which the DAG builds and the real loaders read.

- ``geneval`` (Table 1): the tiny_geneval preset with its SD3 base named by hub id, fetched by the download rule
  from a hub-compatible server on 127.0.0.1 (a second run asks the hub for nothing); GenEval's per-tag columns, the
  paper's metric columns, training prompts disjoint from the test prompts, each training reward timed per iteration.
- ``pickapic`` (Tables 2-7): the tiny_pickapic preset (Flux) with the task's prompt lists pinned by URL + sha256 on
  a local file server (``extends: pickapic``), fetched once by the fetch_data rule, plus a LoRA baseline of Table 1
  (a tiny FluxPipeline with a random LoRA fused at a scale) evaluated through its own pipeline call.

The tiny_sd3 / tiny_flux presets (the toy task on these classes) are planned by ``snakemake -n`` here; the two
DAGs above run every stage they would.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from dag_utils import run_snakemake, scratch_workflow
from data_server import FileServer
from hub_server import FakeHub
from tafs.models.tiny import build_tiny_lora, build_tiny_pipeline

pytestmark = pytest.mark.slow
FAST = {"methods": {"flow_grpo": {"train": {"method": {"n_steps": 4}}}}, "results": "results"}
TABLE1_LABELS = ["GenEval (%)", "PickScore", "CLIP", "HPS-v2.1", "ImageR.", "Unified R."]


def _config(wf, preset: str, **extra) -> dict:
    cfg = yaml.safe_load((wf / "workflow" / "presets" / f"{preset}.yaml").read_text())
    cfg.update(FAST)
    cfg.update(extra)
    return cfg


def _run(wf, cfg: dict):
    (wf / "run.yaml").write_text(yaml.safe_dump(cfg))
    res = run_snakemake(wf, "--cores", "2", "--configfile", "run.yaml", timeout=1500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res


def _metrics(results, model: str = "base", sampler: str = "ode", nfe: int = 8) -> dict:
    return json.loads((results / "eval" / model / sampler / f"nfe{nfe}" / "metrics.json").read_text())


def _train_rows(results, run: str = "tafs_grpo") -> list[dict]:
    path = results / "runs" / run / "seed0" / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_geneval_task_with_its_sd3_base_from_the_hub_fills_table1(tmp_path):
    wf = scratch_workflow(tmp_path)
    src = build_tiny_pipeline("sd3", tmp_path / "hub_repo")
    cfg = _config(wf, "tiny_geneval", hub={"cache": "hub_cache"})
    cfg["model"]["pretrained"] = {"hub": "acme/tiny-sd3", "revision": "main"}
    cfg["tables"].update(comparison=["tafs_grpo"], base_rows=[["ode", 8], ["ode", 4]])  # CI time: one method,
    cfg["sweep"]["base_samplers"] = ["ode"]                                            # one base sampler
    with FakeHub({"acme/tiny-sd3": src}) as hub:
        old = os.environ.get("HF_ENDPOINT")
        os.environ["HF_ENDPOINT"] = hub.url
        try:
            _run(wf, cfg)
            served = len(hub.requests)
            assert served > 5 and (wf / "hub_cache" / "acme--tiny-sd3@main" / "model_index.json").is_file()
            again = run_snakemake(wf, "--cores", "2", "--configfile", "run.yaml")
            assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
            assert len(hub.requests) == served  # the second run asked the hub for nothing
        finally:
            os.environ.pop("HF_ENDPOINT")
            if old is not None:
                os.environ["HF_ENDPOINT"] = old
    results = wf / "results"
    summary = json.loads((results / "runs/tafs_grpo/seed0/train_summary.json").read_text())
    assert summary["shift"] == 3.0  # SD3's own static shift
    train = [json.loads(x)["prompt"] for x in (results / "prompts/train.jsonl").read_text().splitlines()]
    test = [json.loads(x) for x in (results / "prompts/test.jsonl").read_text().splitlines()]
    assert not set(train) & {t["prompt"] for t in test}  # disjoint splits
    assert {t["category"] for t in test} == {"single_object", "two_object", "counting", "colors", "position",
                                             "color_attr"} and all("include" in t["metadata"] for t in test)

    m = _metrics(results)["metrics"]
    n = _metrics(results)["n"]
    assert set(m) == {"geneval", "pickscore", "clip", "hpsv2", "imagereward", "unifiedreward"}
    assert 0 <= m["geneval"]["mean"] <= 1 and len(m["geneval"]["by_category"]) == 6
    # GenEval's overall = the mean of its six tag accuracies
    assert m["geneval"]["mean"] == pytest.approx(sum(c["mean"] for c in m["geneval"]["by_category"].values()) / 6)
    for key in ("pickscore", "clip", "hpsv2", "imagereward"):
        assert math.isfinite(m[key]["mean"]) and m[key]["n"] == n, key
    assert m["unifiedreward"]["invalid"] == n  # a random judge never answers "Final Score: k": counted, not scored

    t1 = pd.read_csv(results / "tables" / "table1.csv")
    assert {"geneval", "pickscore", "clip", "hpsv2", "imagereward", "unifiedreward", "geneval_counting"} <= set(t1)
    md = (results / "tables" / "table1.md").read_text()
    assert all(label in md for label in TABLE1_LABELS) and "could not score" in md and "Unified R." in md
    rows = _train_rows(results)
    assert len(rows) == 2 and all(rows[0][f"time_reward/{r}_s"] > 0
                                  for r in ("geneval_score", "pickscore", "clip", "hpsv2"))
    assert (results / "mlflow" / "ingest.json").is_file()


def test_pickapic_task_with_its_prompt_lists_pinned_by_url_and_a_lora_baseline(tmp_path):
    wf = scratch_workflow(tmp_path)
    other = build_tiny_pipeline("flux", tmp_path / "flux_dev", seed=1)
    build_tiny_lora(other, tmp_path / "flux_lora", seed=2)
    baseline = {"label": "Tiny Flux + LoRA", "model": str(other), "nfe": [8], "guidance_scale": 3.5,
                "resolution": 32, "pipeline_kwargs": {"max_sequence_length": 32},
                "lora": {"model": str(tmp_path / "flux_lora"), "scale": 0.125}}
    srv_dir = tmp_path / "srv"
    srv_dir.mkdir()
    lists = {"train": [f"a watercolor of a lighthouse number {i}" for i in range(40)],
             "test": [f"an oil painting of a fox, style {i}" for i in range(8)]}
    pins = {}
    for split, lines in lists.items():
        data = ("\n".join(lines) + "\n").encode()
        (srv_dir / f"{split}.txt").write_bytes(data)
        pins[split] = hashlib.sha256(data).hexdigest()
    with FileServer(srv_dir) as srv:
        prompts = {s: {"url": srv.url(f"{s}.txt"), "sha256": pins[s]} for s in lists}
        cfg = _config(wf, "tiny_pickapic", tasks={"pickapic": {"extends": "pickapic", "prompts": prompts}},
                      hub={"cache": "cache"}, baselines={"tiny_lora": baseline, "flux_pipeline": {
                          "label": "Tiny Flux (pipeline)", "model": {"base": True}, "nfe": [8],  # the base's own
                          "guidance_scale": 3.5, "resolution": 32,                             # pipeline call
                          "pipeline_kwargs": {"max_sequence_length": 32}}})
        cfg["tables"].update(comparison=["tafs_grpo"], base_rows=[["ode", 8], ["ode", 4]])  # CI time: one
        cfg["sweep"]["base_samplers"] = ["ode"]                               # method, one base sampler
        _run(wf, cfg)
        assert sorted(srv.requests) == ["/test.txt", "/train.txt"]
        again = run_snakemake(wf, "--cores", "2", "--configfile", "run.yaml")
        assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
        assert len(srv.requests) == 2  # fetched once
    results = wf / "results"
    assert (wf / "cache" / "data").is_dir() and len(list((wf / "cache" / "data").iterdir())) == 2
    m = _metrics(results)["metrics"]
    assert set(m) == {"pickscore", "clip", "hpsv2", "imagereward", "unifiedreward"}
    t2 = pd.read_csv(results / "tables" / "table2.csv")
    assert {"pickscore", "clip", "hpsv2", "imagereward", "unifiedreward"} <= set(t2)
    md = (results / "tables" / "table2.md").read_text()
    assert "PickScore [in-domain]" in md and "HPS-v2.1 [out-of-domain]" in md
    rows = _train_rows(results)
    assert {"time_reward/pickscore_s", "time_reward/clip_s"} <= set(rows[0])
    assert (results / "figures" / "figure4.png").stat().st_size > 5000
    t1 = pd.read_csv(results / "tables" / "table1.csv")
    assert {"Tiny Flux + LoRA", "Tiny Flux (pipeline)"} <= set(t1["method"])
    m = json.loads((results / "eval/baselines/tiny_lora/pipeline/nfe8/metrics.json").read_text())
    assert m["sampler"] == "pipeline" and m["nfe"] == 8 and set(m["metrics"]) == set(_metrics(results)["metrics"])
    summary = json.loads((results / "runs/tafs_grpo/seed0/train_summary.json").read_text())
    assert 1.4 < summary["shift"] < 1.7  # Flux's resolution-dependent shift at 32 px (64 tokens)


@pytest.mark.parametrize("preset", ["tiny_sd3", "tiny_flux", "toy_long", "toy_calibration"])
def test_presets_of_the_toy_task_plan(preset, tmp_path):
    wf = scratch_workflow(tmp_path)
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--configfile",
                          f"workflow/presets/{preset}.yaml"], cwd=wf, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "rule train:" in res.stdout and "rule tables:" in res.stdout
