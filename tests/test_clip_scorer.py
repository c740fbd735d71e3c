"""The learned toy CLIP-like scorer and the ``clip`` reward that loads it (or a hub CLIP)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tafs.config import ConfigError
from tafs.rewards.registry import available, build
from tafs.toyworld.prompts import CATEGORIES, ObjectSpec, PromptSpec, prompt_set
from tafs.toyworld.render import render
from tafs.toyworld.scorer import (ScorerConfig, build_scorer, canonical, category_batch, fit_scorer, main,
                                  ranking_accuracy, ranking_report, save_scorer)

# lr 1e-3 for 150 steps: ~5 s on an idle core, ranking accuracy measured 0.95 (chance 0.5).
QUICK = ScorerConfig(steps=150, warmup_steps=50, lr=1e-3)
MIN_ACCURACY = 0.8


@pytest.fixture(scope="module")
def trained():
    scorer, stats = fit_scorer(QUICK, progress=False)
    return scorer, stats


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("scorer") / "clip"
    save_scorer(trained[0], path, {"note": "test"})
    return path


@pytest.fixture(scope="module")
def batch():
    specs = prompt_set("test")[::3]
    return [s.text for s in specs], render(specs, np.random.default_rng(3))


def test_clip_is_a_registered_reward():
    assert "clip" in available()


def test_short_training_ranks_correct_renders_above_other_prompts(trained):
    scorer, stats = trained
    assert stats["final_loss"] < 1.5  # ln(32) ~ 3.5 at chance for the largest batches
    report = ranking_report(scorer.reward(), "test", n=6, seed=1)
    assert report["overall"] >= MIN_ACCURACY, report
    assert set(report["by_category"]) == set(CATEGORIES)
    assert min(report["by_category"].values()) >= 0.6, report
    assert report["margin"] > 0


def test_untrained_scorer_is_near_chance():
    """The metric is not trivially high: a random CLIPModel ranks about half the pairs right."""
    acc = ranking_accuracy(build_scorer(QUICK).reward(), "test", n=4, seed=1)
    assert 0.3 <= acc <= 0.7


def test_saved_folder_round_trips_through_the_registry(trained, saved, batch):
    texts, images = batch
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"):
        assert (saved / name).exists(), name
    loaded = build("clip", path=str(saved), scale=1.0)
    expected = trained[0].reward().score(texts, images)
    torch.testing.assert_close(loaded(texts, [{}] * len(texts), images), expected, atol=1e-5, rtol=0)


def test_scores_are_cosines_of_shape_n_and_deterministic(saved, batch):
    texts, images = batch
    reward = build("clip", path=str(saved), batch_size=4, scale=1.0)  # several image and text chunks
    s = reward(texts, [{}] * len(texts), images)
    assert s.shape == (len(texts),) and s.dtype == torch.float32
    assert bool(((s >= -1) & (s <= 1)).all())
    assert s.std() > 0  # not a constant
    torch.testing.assert_close(reward.score(texts, images), s, atol=0, rtol=0)  # cached text features
    torch.testing.assert_close(build("clip", path=str(saved), scale=1.0).score(texts, images), s, atol=1e-6, rtol=0)
    # the same image scored against two prompts gives each its own score (texts are not mixed up)
    pair = reward.score([texts[0], texts[1]], images[:1].expand(2, -1, -1, -1))
    torch.testing.assert_close(pair[0], s[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(pair[1], reward.score([texts[1]], images[:1])[0], atol=1e-6, rtol=0)
    assert abs(pair[0] - pair[1]) > 1e-4


def test_other_image_sizes_are_resized(saved, batch):
    texts, images = batch
    reward = build("clip", path=str(saved), scale=1.0)
    base = reward.score(texts, images)
    big = images.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)  # 64 px, same picture
    scaled = reward.score(texts, big)
    assert scaled.shape == base.shape
    assert (scaled - base).abs().max() < 0.1
    # and the scorer still ranks: a broken resize/crop (e.g. the top-left quarter) would not
    upsampled = lambda t, meta, im: reward(t, meta, im.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2))  # noqa: E731
    assert ranking_accuracy(upsampled, "test", n=4, seed=2) >= MIN_ACCURACY
    odd = torch.nn.functional.interpolate(images, size=(48, 40), mode="nearest")  # non-square: short side
    assert reward.score(texts, odd).shape == base.shape


def test_bad_path_names_the_path(tmp_path):
    missing = tmp_path / "no_such_scorer"
    with pytest.raises(FileNotFoundError, match="no_such_scorer"):
        build("clip", path=str(missing))
    empty = tmp_path / "empty_scorer"
    empty.mkdir()
    with pytest.raises(OSError, match="empty_scorer"):
        build("clip", path=str(empty))


def test_mismatched_inputs_raise(saved, batch):
    texts, images = batch
    reward = build("clip", path=str(saved), scale=1.0)
    with pytest.raises(ValueError, match="one of each per sample"):
        reward(texts[:-1], [{}] * (len(texts) - 1), images)
    with pytest.raises(ValueError, match="one of each per sample"):
        reward(texts, [{}], images)


def test_batches_hold_one_category_without_paraphrases():
    a = PromptSpec("position", (ObjectSpec("ring"), ObjectSpec("cross")), "right of")
    b = PromptSpec("position", (ObjectSpec("cross"), ObjectSpec("ring")), "left of")
    c = PromptSpec("position", (ObjectSpec("cross"), ObjectSpec("ring")), "above")
    assert canonical(a) == canonical(b) != canonical(c)
    specs = prompt_set("train", ["position"])
    for seed in range(5):
        got = category_batch(specs, 32, np.random.default_rng(seed))
        keys = [canonical(s) for s in got]
        assert len(set(keys)) == len(keys) and {s.category for s in got} == {"position"}
    assert len(category_batch(prompt_set("train", ["single_object"]), 32, np.random.default_rng(0))) == 4


def test_training_is_deterministic():
    cfg = ScorerConfig(steps=3, vision_layers=1, text_layers=1)
    (m1, _, _), s1 = fit_scorer(cfg, progress=False)
    (m2, _, _), s2 = fit_scorer(cfg, progress=False)
    assert s1["final_loss"] == s2["final_loss"]
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k


def test_cli_writes_a_loadable_scorer_with_metrics(tmp_path, batch):
    out = tmp_path / "clip"
    cfg = {"steps": 4, "vision_layers": 1, "text_layers": 1, "eval_trials": 1}
    main(["--cfg", json.dumps(cfg), "--out", str(out), "--threads", "1", "--no-progress"])
    m = json.loads((out / "scorer_metrics.json").read_text())
    assert m["steps"] == 4 and m["wall_s"] > 0 and np.isfinite(m["final_loss"])
    assert 0 <= m["ranking_test"]["overall"] <= 1
    assert set(m["ranking_test"]["by_category"]) == set(CATEGORIES)
    assert m["config"]["vision_layers"] == 1
    texts, images = batch
    assert build("clip", path=str(out), scale=1.0).score(texts, images).shape == (len(texts),)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind
    with pytest.raises(ConfigError, match="no_such_key"):
        main(["--cfg", '{"no_such_key": 1}', "--out", str(tmp_path / "x")])
