"""The generic evaluator: a prompt file in, the task's metrics by name out (metrics.json + samples.png)."""

from __future__ import annotations

import json

import pytest
import torch

from tafs.evaluate import EvalConfig, select_prompts, summarize, sweep
from tafs.prompts import Prompt
from tafs.rewards import registry

from conftest import toy_prompts, registered_brightness

REWARD = "test_eval_brightness"


registered = registered_brightness(REWARD)


def test_select_prompts_cycles_per_category_and_repeats():
    ps = [Prompt("a", category="x"), Prompt("b", category="x"), Prompt("c", category="y")]
    assert [p.text for p in select_prompts(ps, 3)] == ["a", "b", "a", "c", "c", "c"]
    assert [p.text for p in select_prompts(ps, None, 2)] == ["a", "a", "b", "b", "c", "c"]
    assert [p.text for p in select_prompts([Prompt("z")], None)] == ["z"]


def test_summarize_by_hand():
    prompts = [Prompt("a", category="x"), Prompt("b", category="x"), Prompt("c", category="y")]
    images = torch.stack([torch.full((3, 2, 2), v) for v in (0.0, 0.5, 1.0)])
    out = summarize(prompts, images, {"bright": registry.build(REWARD)})["bright"]
    assert out["mean"] == pytest.approx(0.5) and out["n"] == 3
    assert out["ci95"] == pytest.approx(1.96 * 0.5 / 3 ** 0.5)  # sd 0.5 over 3 images
    assert out["by_category"]["x"]["mean"] == pytest.approx(0.25) and out["by_category"]["y"]["n"] == 1
    no_cats = summarize([Prompt("a"), Prompt("b")], images[:2], {"bright": registry.build(REWARD)})
    assert no_cats["bright"]["by_category"] == {}


def test_unscored_images_are_counted_not_averaged():
    """A reward's NaN (e.g. a judge's unparsable answer) is excluded from the mean and reported as `invalid`;
    a category-averaged metric is the mean of the category means (GenEval's overall)."""
    prompts = [Prompt(t, category=c) for t, c in (("a", "x"), ("b", "x"), ("c", "x"), ("d", "y"))]
    images = torch.zeros(4, 3, 2, 2)

    def judge(texts, meta, imgs):
        return torch.tensor([1.0, float("nan"), 0.0, 1.0])

    out = summarize(prompts, images, {"j": judge, "k": judge}, category_mean=["k"])
    assert out["j"]["invalid"] == 1 and out["j"]["n"] == 3 and out["j"]["mean"] == pytest.approx(2 / 3)
    assert out["j"]["by_category"]["x"] == pytest.approx({"mean": 0.5, "ci95": 1.96 * 0.5 ** 0.5 / 2 ** 0.5, "n": 2})
    # category mean: (0.5 + 1.0) / 2; stratified CI: 1.96 sqrt((0.5 / 2 + 0) / 2^2)
    assert out["k"]["mean"] == pytest.approx(0.75) and out["k"]["ci95"] == pytest.approx(1.96 * (0.25 / 4) ** 0.5)
    none = summarize(prompts[:1], images[:1], {"j": lambda t, m, i: torch.tensor([float("nan")])})["j"]
    assert none["invalid"] == 1 and none["n"] == 0 and none["mean"] != none["mean"]  # NaN: nothing scored


def test_toy_task_evaluation_writes_metrics_chance_and_grid(tiny_model_dir, tmp_path):
    """The toy task's metrics (checker's strict/dense scores by name) and its chance levels, through the
    generic evaluator; the same noise for the same image index whatever the NFE."""
    from tafs.models.loading import load_backbone

    cfg = EvalConfig(per_category=2, batch_size=5, metrics={"correct": "toy_correct", "dense": "toy_dense",
                                                             "bright": REWARD},
                     chance="tafs.tasks.toy:chance_scores")
    backbone = load_backbone(tiny_model_dir, device="cpu")
    out = sweep(backbone, toy_prompts("test"), cfg, [1, 2], "tiny", tmp_path, progress=False)
    assert [m["nfe"] for m in out] == [1, 2]
    m = json.loads((tmp_path / "nfe2" / "metrics.json").read_text())
    assert m["n"] == 12 and set(m["metrics"]) == {"correct", "dense", "bright"}
    assert len(m["metrics"]["correct"]["by_category"]) == 6
    assert 0 <= m["chance"]["dense"] <= 1 and m["chance"]["correct"] < 0.2
    assert m["config"]["metrics"]["dense"] == "toy_dense"
    assert (tmp_path / "nfe1" / "samples.png").stat().st_size > 1000


def test_missing_metadata_is_refused_before_sampling(tiny_model_dir, tmp_path):
    from tafs.models.loading import load_backbone
    from tafs.prompts import PromptFileError

    cfg = EvalConfig(metrics={"dense": "toy_dense"})
    with pytest.raises(PromptFileError, match="lacks metadata \\['objects'\\]"):
        sweep(load_backbone(tiny_model_dir, device="cpu"), [Prompt("a red ring")], cfg, [2], "x", tmp_path)
    assert not list(tmp_path.iterdir())
