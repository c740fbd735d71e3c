"""Flow-GRPO's training options (yifan123/flow_grpo, scripts/train_sd3.py, flow_grpo/stat_tracking.py, flow_grpo/ema.py):
advantage clamp, prompt-text groups, the global std, the detached CFG negative branch, the EMA of the LoRA
weights, and the exact old log-probs before the first update (``train.old_logprob``, ``ratio_max_abs_log``).
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass

import numpy as np
import pytest
import torch
import yaml

from tafs.config import ConfigError, deep_merge, from_dict
from tafs.models.loading import load_backbone
from tafs.models.options import ModelOptions
from tafs.models.tiny import build_tiny_pipeline
from tafs.train.advantages import clip_weights, group_normalize, mix_advantages, prompt_groups
from tafs.train.ema import EmaConfig, LoraEma
from tafs.train.trainer import Trainer, TrainConfig

from conftest import iterate_capturing, registered_brightness, toy_prompts

torch.set_num_threads(1)
REWARD = "test_options_brightness"


registered_reward = registered_brightness(REWARD)


def make_cfg(**override) -> TrainConfig:
    base = {"seed": 0, "iterations": 2, "prompts_per_iter": 2, "group_size": 3, "lr": 1e-2, "weight_decay": 0.0,
            "minibatches": 2, "checkpoint_every": 1, "lora": {"rank": 4, "alpha": 8}, "method": {"n_annealed": 2},
            "advantage": {"rewards": {REWARD: 1.0}, "n_adv": 2}}
    return from_dict(TrainConfig, deep_merge(base, override), "train")


# -- advantages -----------------------------------------------------------------------------------------

def test_clip_by_hand():
    w = torch.tensor([[-7.0, 0.5], [5.0, 6.0]])
    assert torch.equal(clip_weights(w, 5.0), torch.tensor([[-5.0, 0.5], [5.0, 5.0]]))
    assert clip_weights(w, None) is w


def test_prompt_drawn_twice_is_one_group():
    texts = ["a", "a", "b", "b", "a", "a"]  # draws: a, b, a (G = 2)
    groups = prompt_groups(texts)
    assert groups.tolist() == [0, 0, 1, 1, 0, 0]
    r = torch.tensor([[1.0], [2.0], [5.0], [7.0], [3.0], [6.0]])
    adv = group_normalize(r, groups, 1e-4)
    # prompt "a": rewards 1, 2, 3, 6: mean 3, population std sqrt((4 + 1 + 0 + 9) / 4) = sqrt(3.5)
    s = 3.5 ** 0.5 + 1e-4
    want = torch.tensor([[-2 / s], [-1 / s], [-1 / 1.0001], [1 / 1.0001], [0.0], [3 / s]])
    torch.testing.assert_close(adv, want)
    by_draw = group_normalize(r, torch.tensor([0, 0, 1, 1, 2, 2]), 1e-4)  # the other grouping: other numbers
    assert not torch.allclose(adv, by_draw)


def test_global_std_is_flow_grpos_stat_tracker():
    """flow_grpo/stat_tracking.py:22-31 re-derived with numpy: per-prompt mean, np.std of ALL rewards + 1e-4."""
    texts = ["a", "b", "a", "c", "b", "a"]
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    want = np.empty_like(rewards)
    for t in set(texts):
        m = np.array(texts) == t
        want[m] = (rewards[m] - rewards[m].mean()) / (np.std(rewards) + 1e-4)
    got = mix_advantages({"r": torch.tensor(rewards)[:, None]}, {"r": 1.0}, prompt_groups(texts), "reward_aggr",
                         1e-4, "global")
    np.testing.assert_allclose(got[:, 0].numpy(), want, rtol=1e-6, atol=1e-6)
    # by hand: np.std(1..6) = sqrt(35/12); prompt "a" = {1, 3, 6}, mean 10/3
    assert float(got[0, 0]) == pytest.approx((1 - 10 / 3) / ((35 / 12) ** 0.5 + 1e-4), rel=1e-6)


@pytest.mark.parametrize("override, needle", [
    ({"advantage": {"group_by": "text"}}, "advantage.group_by"),
    ({"advantage": {"clip": 0}}, "advantage.clip"),
    ({"old_logprob": "fresh"}, "train.old_logprob"),
    ({"ema": {"decay": 1.0}}, "ema.decay"),
    ({"ema": {"every": 0}}, "ema.every"),
    ({"ema": {"enabled": 1}}, "ema.enabled"),
    ({"ema": {"decy": 0.9}}, "decy"),
])
def test_bad_values_name_the_key(override, needle):
    with pytest.raises((ValueError, ConfigError), match=needle.replace(".", r"\.")):
        make_cfg(**override)


def _paths(cls, prefix=""):
    for f in fields(cls):
        yield prefix + f.name
        default = f.default_factory() if callable(f.default_factory) else f.default
        if is_dataclass(default):
            yield from _paths(type(default), prefix + f.name + ".")


DAG_FILLED = ("reward_kwargs",)  # tafs.dag fills it in from the task's rewards


def test_schema_knows_every_train_key():
    """Every TrainConfig key (but ``method``'s, whose options are another change's) is allowed by the schema."""
    with open("workflow/schemas/config.schema.yaml", encoding="utf-8") as fh:
        schema = yaml.safe_load(fh)["$defs"]["train"]
    for path in (p for p in _paths(TrainConfig) if not p.startswith("method.") and p not in DAG_FILLED):
        node = schema
        for part in path.split("."):
            assert part in node.get("properties", {}), f"train.{path} is missing from the schema"
            node = node["properties"][part]




def test_iterate_groups_by_prompt_text_and_clips(tiny_model_dir, tmp_path, monkeypatch):
    """One training prompt: both draws are the same text, so group_by=prompt makes ONE group of 6."""
    prompts = [toy_prompts("train")[0]]
    cfg = make_cfg(advantage={"group_by": "prompt", "clip": 1.0, "mode": "per_step"})
    trainer = Trainer(load_backbone(tiny_model_dir, device="cpu"), cfg, tmp_path / "ck", prompts)
    traj, weights, row = iterate_capturing(trainer, monkeypatch)
    rewards = ((traj.x0_hats[:, 1:] + 1) / 2).clamp(0, 1).mean((2, 3, 4))
    want = ((rewards - rewards.mean(0)) / (rewards.std(0, unbiased=False) + 1e-4)).clamp(-1, 1)
    torch.testing.assert_close(weights, want, atol=1e-4, rtol=1e-4)
    assert weights.abs().max() == pytest.approx(1.0, abs=1e-3) and row["ratio_max_abs_log"] == 0.0


# -- EMA ---------------------------------------------------------------------------------------------------

def _ema(values, **cfg):
    p = torch.nn.Parameter(torch.zeros(1))
    ema = LoraEma(EmaConfig(enabled=True, **cfg), [p])
    for v in values:  # the weights after optimiser step 1, 2, ...
        with torch.no_grad():
            p.fill_(v)
        ema.step()
    return float(ema.shadow[0])


def test_ema_by_hand():
    # every 2: updates after steps n = 1, 3 (n + 1 even), decay min((1 + n) / (10 + n), 0.9) = 2/11, 4/13
    assert _ema([1.0], every=2) == pytest.approx(9 / 11)
    assert _ema([1.0, 2.0], every=2) == pytest.approx(9 / 11)
    assert _ema([1.0, 2.0, 3.0], every=2) == pytest.approx(4 / 13 * 9 / 11 + 9 / 13 * 3)
    assert _ema([1.0, 2.0, 3.0], every=2, warmup=False) == pytest.approx(0.9 * 0.1 + 0.1 * 3)
    assert _ema([1.0], every=2, repeat=2) == pytest.approx(1 - (2 / 11) ** 2)  # twice with the same weights
    # Flow-GRPO's setting: every 8 optimiser steps; the first update after step 7 with decay 8/17
    assert _ema([float(n) for n in range(1, 8)], every=8) == pytest.approx(9 / 17 * 7)
    assert _ema([1.0] * 100, every=8, warmup=False, decay=0.9) == pytest.approx(1 - 0.9 ** 12)


def _ema_cfg(**extra):
    return dict(iterations=3, checkpoint_every=1, ema={"enabled": True, "decay": 0.5, "every": 1}, **extra)


def test_ema_is_checkpointed_resumed_and_exported(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    full = Trainer(load_backbone(tiny_model_dir, device="cpu"), make_cfg(**_ema_cfg()), tmp_path / "a",
                   toy_prompts("train"))
    full.run(resume=False)
    assert full.ema.steps == 6  # 3 iterations x 2 minibatches
    live = [p.detach().clone() for p in full.params]
    assert any(not torch.allclose(s, p) for s, p in zip(full.ema.shadow, live))

    first = Trainer(load_backbone(tiny_model_dir, device="cpu"), make_cfg(**_ema_cfg()), tmp_path / "b",
                    toy_prompts("train"))
    first.run(stop_after=2)
    second = Trainer(load_backbone(tiny_model_dir, device="cpu"), make_cfg(**_ema_cfg()), tmp_path / "b",
                     toy_prompts("train"))
    assert second.run()["resumed"] and second.ema.steps == 6
    for a, b in zip(second.ema.shadow, full.ema.shadow):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)

    full.export(tmp_path / "run", {"iterations": 3})
    saved = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    names = [n for n, p in full.backbone.denoiser().named_parameters() if p.requires_grad]
    for n, s in zip(names, full.ema.shadow):
        key = n.replace(".default", "")
        assert torch.equal(saved[key], s), key
    for p, v in zip(full.params, live):  # the live weights are back after the export
        assert torch.equal(p, v)


# -- the detached CFG negative branch (SD3) ----------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_pipelines_opts")
    return {fam: build_tiny_pipeline(fam, root / fam) for fam in ("sd3", "flux")}


def test_detached_uncond_gradient_is_guidance_times_the_conditional_one(tiny_dirs):
    from tafs.models.backbone import LoraSpec

    bb = load_backbone(tiny_dirs["sd3"], device="cpu", options=ModelOptions(resolution=32))
    bb.add_lora(LoraSpec(rank=4, alpha=8, target_modules=tuple(bb.lora_targets)), seed=0)
    params = bb.trainable_parameters()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in params:  # B != 0, so that every LoRA tensor gets a gradient
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    x, sigma = torch.randn(2, *bb.latent_shape, generator=g), torch.tensor([0.8, 0.4])
    w = torch.randn(2, *bb.latent_shape, generator=g)
    cond = bb.encode(["a red square", "two blue rings"])

    def grads(fn):
        for p in params:
            p.grad = None
        out = fn()
        (out * w).sum().backward()
        return out.detach(), [p.grad.clone() for p in params]

    v_full, g_full = grads(lambda: bb.velocity(x, sigma, cond))
    with bb.uncond_detached():
        v_det, g_det = grads(lambda: bb.velocity(x, sigma, cond))
    assert not bb.detach_uncond  # restored on exit
    _, g_cond = grads(lambda: bb._forward(x, sigma, cond))  # the conditional branch alone
    _, g_unc = grads(lambda: bb._forward(x, sigma, bb.negative().repeat_interleave(2)))
    s = bb.guidance
    assert s == 4.5
    assert torch.equal(v_det, v_full)  # the same forward
    for a, c, u, n in zip(g_det, g_cond, g_unc, g_full):
        torch.testing.assert_close(a, s * c, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(n, s * c + (1 - s) * u, atol=1e-5, rtol=1e-4)
    assert max(float((a - n).abs().max()) for a, n in zip(g_det, g_full)) > 1e-3


# -- the old log-probs before the first update -------------------------------------------------------------

def ratio_at_zero(model_dir, ckpt_dir, mode: str, dtype: str = "bf16", mixed_precision: str = "no") -> tuple:
    """(recomputes?, ratio_max_abs_log) of iteration 0: sampled 4 at a time, trained 3 at a time (the presets'
    kind of layout: sample_chunk != micro_batch), CFG negative branch detached, KL on."""
    bb = load_backbone(model_dir, device="cpu", options=ModelOptions(resolution=32, dtype=dtype))
    cfg = make_cfg(iterations=1, minibatches=1, sample_chunk=4, micro_batch=3, old_logprob=mode, beta=0.01,
                   cfg_detach_uncond=True, mixed_precision=mixed_precision)
    trainer = Trainer(bb, cfg, ckpt_dir, toy_prompts("train"))
    return trainer.recompute_old, trainer.iterate()["ratio_max_abs_log"]


@pytest.mark.parametrize("fam", ["sd3", "flux"])
def test_ratio_at_iteration_zero_with_a_bf16_transformer(tiny_dirs, tmp_path, fam):
    """bf16 weights: the recomputed old log-probs make the first minibatch's ratio exactly 1. (On CPU the bf16
    kernels do not depend on the batch shape: the sampler's values were off by ~1e-7 only, measured.)"""
    got = {mode: ratio_at_zero(tiny_dirs[fam], tmp_path / mode, mode) for mode in ("sampling", "recompute", "auto")}
    print(f"{fam}, bf16 transformer, iteration 0, max |log ratio|: {got}")
    assert [got[m][0] for m in ("sampling", "recompute", "auto")] == [False, True, True]  # auto: a bf16 denoiser
    assert got["recompute"][1] < 1e-6 and got["auto"][1] < 1e-6 and got["sampling"][1] < 1e-3


MIXED = """
import json, sys
from pathlib import Path
from tafs.rewards import registry
from conftest import brightness_reward
import test_trainer_options as t
registry.register(brightness_reward(t.REWARD))
root = Path(sys.argv[1])
print(json.dumps({fam + "/" + mode: t.ratio_at_zero(root / fam, root / (fam + mode), mode, "fp32", "bf16")
                  for fam in ("sd3", "flux") for mode in ("sampling", "auto")}))
"""


def test_ratio_at_iteration_zero_under_bf16_autocast(tiny_dirs, tmp_path):
    """mixed_precision bf16 (its own process: accelerate's precision is per process): the sampler runs the fp32
    weights, the training pass autocasts, so the sampled log-probs are off by ~1e-3 (measured: SD3 5.8e-4, Flux
    8.8e-4, more than a 1e-4 clip); auto recomputes them and the ratio is exactly 1."""
    import json
    import os
    import subprocess
    import sys

    root = tiny_dirs["sd3"].parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), "tests"]), "TQDM_DISABLE": "1",
           "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", MIXED, str(root)], check=False, env=env, capture_output=True, text=True,
                         timeout=300, cwd=os.getcwd())
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"bf16 autocast, iteration 0, max |log ratio|: {got}")
    for fam in ("sd3", "flux"):
        assert got[f"{fam}/sampling"][0] is False and got[f"{fam}/sampling"][1] > 1e-5
        assert got[f"{fam}/auto"][0] is True and got[f"{fam}/auto"][1] < 1e-6


def test_fp32_auto_keeps_the_sampled_log_probs(tiny_model_dir, tmp_path):
    trainer = Trainer(load_backbone(tiny_model_dir, device="cpu"), make_cfg(sample_chunk=4, micro_batch=3),
                      tmp_path / "ck", toy_prompts("train"))
    assert not trainer.recompute_old
    assert trainer.iterate()["ratio_max_abs_log"] < 1e-5
