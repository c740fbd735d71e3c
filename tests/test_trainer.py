"""The GRPO trainer end to end on the tiny toy backbone (DESIGN §4-7, §10).

A random tiny model draws noise images, on which the toy checker gives the same score to every
sample of a group (zero advantages, nothing moves). The trainer tests therefore use a registered
test reward, the mean brightness of the image: deterministic, and different for every sample.
"""

from __future__ import annotations

from tafs.checkpoint import checkpoint_path
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from tafs.config import deep_merge, from_dict
from tafs.io import read_jsonl
from tafs.models.loading import load_backbone
from tafs.sampling.policy import gaussian_log_prob
from tafs.train.advantages import group_normalize
from tafs.train.resume import checkpoint_identity
from tafs.train.trainer import Trainer, TrainConfig

from conftest import TINY, iterate_capturing, registered_brightness, toy_prompts

torch.set_num_threads(1)

REWARD = "test_brightness"
K = 3
B, G = 2, 4


registered_reward = registered_brightness(REWARD)


def make_cfg(**override) -> TrainConfig:
    base = {
        "seed": 0, "iterations": 2, "prompts_per_iter": B, "group_size": G,
        "lr": 1e-2, "weight_decay": 0.0,  # no decay: a LoRA tensor only moves if it got a gradient
        "minibatches": 2, "inner_epochs": 1, "checkpoint_every": 1,
        "lora": {"rank": 4, "alpha": 8},
        "method": {"n_annealed": K},
        "advantage": {"rewards": {REWARD: 1.0}, "n_adv": K},
    }
    return from_dict(TrainConfig, deep_merge(base, override), "train")


def make_trainer(model_dir: Path, ckpt_dir: Path, **override) -> Trainer:
    return Trainer(load_backbone(model_dir, device="cpu"), make_cfg(**override), ckpt_dir, toy_prompts("train"))


def lora_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(trainer.backbone.denoiser()).items()}


def split_params(trainer: Trainer) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Copies of (LoRA tensors, base tensors of the transformer and the text encoder)."""
    lora, base = {}, {}
    for n, p in trainer.backbone.denoiser().named_parameters():
        (lora if ("lora_A" in n or "lora_B" in n) else base)[f"transformer.{n}"] = p.detach().clone()
    for n, p in trainer.backbone.text_encoder.named_parameters():
        base[f"text_encoder.{n}"] = p.detach().clone()
    return lora, base


def _randomise_lora_b(trainer: Trainer, scale: float = 0.05, seed: int = 7) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in trainer.backbone.denoiser().named_parameters():
            if "lora_B" in n:
                p.copy_(scale * torch.randn(p.shape, generator=g))


def _texts_and_cond(trainer: Trainer):
    texts = [p.text for p in trainer.prompts[:B] for _ in range(G)]
    return texts, trainer.encode(texts)


# -- (a) ratio before the first update, and the log-probs the loss re-evaluates -------------------

def test_ratio_is_one_before_first_update(tiny_model_dir, tmp_path):
    trainer = make_trainer(tiny_model_dir, tmp_path / "ck", minibatches=1, inner_epochs=1, beta=0.01)
    row = trainer.iterate()
    assert row["iteration"] == 0
    assert abs(row["ratio"] - 1) < 1e-5, row
    assert row["approx_kl"] < 1e-9, row
    assert row["clip_frac"] == 0.0, row
    # LoRA B starts at zero: the policy IS the reference, so the KL term is zero
    assert row["kl"] < 1e-12, row
    # and there was a learning signal (non-zero advantages -> non-zero gradient)
    assert row["grad_norm"] > 0, row
    assert row["nfe_old"] == K + 1 and row["nfe_theta"] == K


@pytest.mark.parametrize("lora_active", [False, True])
def test_recomputed_log_probs_match_sampled(tiny_model_dir, tmp_path, lora_active):
    trainer = make_trainer(tiny_model_dir, tmp_path / "ck")
    if lora_active:
        _randomise_lora_b(trainer, scale=0.5)
    _, cond = _texts_and_cond(trainer)
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn((B * G, *trainer.backbone.latent_shape), generator=gen)
    trainer.backbone.denoiser().eval()
    traj = trainer.method.sample(trainer.backbone, cond, noise, gen, 0)
    assert traj.log_probs.shape == (B * G, K)
    assert traj.trained.all() and traj.num_actions == K
    # the trainer's pairing: action j produces scored step action_step[j] - 1 = j
    assert torch.equal(traj.action_step, torch.arange(1, K + 1))

    trainer.backbone.denoiser().train()  # the mode the loss runs in
    with torch.no_grad():
        for j in range(K):
            s, s_next = float(traj.sigmas[j]), float(traj.sigmas_next[j])
            mean, std, x0_hat = trainer.method.transition(trainer.backbone, traj.states[:, j], s, s_next, cond)
            logp = gaussian_log_prob(traj.actions[:, j], mean, std)
            torch.testing.assert_close(logp, traj.log_probs[:, j], atol=1e-5, rtol=0)
            torch.testing.assert_close(std, torch.full((B * G,), s_next))
            torch.testing.assert_close(x0_hat, traj.x0_hats[:, j], atol=1e-5, rtol=1e-5)
            # the state of the next action is this action
            if j + 1 < K:
                assert torch.equal(traj.states[:, j + 1], traj.actions[:, j])
            # x0_hats[:, action_step[j]] is the clean estimate computed FROM action j
            _, _, x0_next = trainer.method.transition(trainer.backbone, traj.actions[:, j], s_next, s_next, cond)
            torch.testing.assert_close(x0_next, traj.x0_hats[:, int(traj.action_step[j])], atol=1e-5, rtol=1e-5)
            if lora_active:  # the check discriminates: the reference policy gives other log-probs
                with trainer.backbone.adapter_disabled():
                    mean_ref, _, _ = trainer.method.transition(trainer.backbone, traj.states[:, j], s, s_next, cond)
                assert (gaussian_log_prob(traj.actions[:, j], mean_ref, std) - traj.log_probs[:, j]).abs().max() > 1e-4
    assert torch.equal(traj.final, traj.x0_hats[:, -1])


@pytest.mark.parametrize("mode, n_adv", [("per_step", 2), ("to_go", 2), ("integrated", 1), ("integrated", K)])
def test_iterate_pairs_actions_with_scored_steps(tiny_model_dir, tmp_path, monkeypatch, mode, n_adv):
    """The weights handed to the optimiser, recomputed independently from the trajectory."""
    trainer = make_trainer(tiny_model_dir, tmp_path / "ck", advantage={"mode": mode, "n_adv": n_adv})
    traj, weights, row = iterate_capturing(trainer, monkeypatch)
    assert weights.shape == (B * G, K)
    # rewards of x0_hat^2..x0_hat^{K+1}: columns 1..K of x0_hats, the last being the final image
    images = ((traj.x0_hats[:, 1:] + 1) / 2).clamp(0, 1)
    rewards = images.mean((2, 3, 4))
    assert rewards.shape == (B * G, K)
    for s in range(K):  # only the last n_adv estimates are decoded and scored: the advantages read no other
        key = f"reward/{REWARD}/step{s + 2}_mean"
        if s < K - n_adv:
            assert key not in row
        else:
            assert row[key] == pytest.approx(float(rewards[:, s].mean()), abs=1e-6)
    assert row[f"reward/{REWARD}/final_mean"] == pytest.approx(float(((traj.final + 1) / 2).clamp(0, 1).mean()),
                                                              abs=1e-6)
    groups = torch.arange(B).repeat_interleave(G)  # G consecutive samples share a prompt
    adv = group_normalize(rewards, groups, 1e-4)
    keep = torch.arange(K) >= K - n_adv
    a = adv * keep
    if mode == "per_step":
        expected = a
    elif mode == "to_go":
        expected = a.flip(1).cumsum(1).flip(1)
    else:
        expected = a.sum(1, keepdim=True).expand(B * G, K)
    torch.testing.assert_close(weights, expected, atol=1e-4, rtol=1e-4)
    assert weights.abs().sum() > 1  # there is signal


# -- (b) training moves every LoRA tensor and nothing else -----------------------------------------

@pytest.fixture(scope="module")
def two_layer_model_dir(tmp_path_factory):
    """Two blocks, so that a block whose context stream feeds the next one exists (the last block of an
    SD3 transformer is ``context_pre_only``)."""
    from tafs.models.toy import ToyModelConfig, build_toy
    from tafs.toyworld.prompts import vocabulary

    path = tmp_path_factory.mktemp("toy2") / "base"
    build_toy(ToyModelConfig(**{**TINY, "layers": 2}), vocabulary(), seed=0).save(path)
    return path


@pytest.fixture(scope="module")
def trained(two_layer_model_dir, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("trained_ckpt")
    trainer = make_trainer(two_layer_model_dir, ckpt, iterations=2, checkpoint_every=1, beta=0.01)
    before_lora, before_base = split_params(trainer)
    summary = trainer.run(resume=False)
    return trainer, before_lora, before_base, summary, ckpt, two_layer_model_dir


# In the last SD3 block (context_pre_only) the context tokens' attention output is discarded, so the
# context QUERY projection cannot influence the velocity: its LoRA gets an exactly zero gradient. This
# is a property of the architecture, not of the trainer (see the report); every other LoRA tensor moves.
DEAD_LORA = ("transformer_blocks.1.attn.add_q_proj.lora_A", "transformer_blocks.1.attn.add_q_proj.lora_B")


def test_two_iterations_change_every_lora_tensor_and_no_base_tensor(trained):
    trainer, before_lora, before_base, summary, ckpt, _ = trained
    assert summary["iterations"] == 2 and summary["resumed"] is False
    after_lora, after_base = split_params(trainer)
    assert len(before_lora) > 0 and set(after_lora) == set(before_lora)
    # every targeted projection (image and context stream) of both blocks got an adapter
    for block in (0, 1):
        for target in ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj"):
            for ab in ("lora_A", "lora_B"):
                assert any(f"blocks.{block}.attn.{target}.{ab}" in n for n in before_lora), (block, target, ab)
    assert any("blocks.0.attn.to_add_out.lora_A" in n for n in before_lora)
    # peft starts B at zero
    assert all(torch.count_nonzero(v) == 0 for n, v in before_lora.items() if "lora_B" in n)
    dead = [n for n in before_lora if any(d in n for d in DEAD_LORA)]
    assert len(dead) == 2
    unchanged = [n for n in before_lora if torch.equal(before_lora[n], after_lora[n]) and n not in dead]
    assert not unchanged, f"LoRA tensors that did not move: {unchanged}"
    for n in dead:  # no gradient reaches them (weight_decay = 0): documents the dead path
        assert torch.equal(before_lora[n], after_lora[n]), n
    assert set(after_base) == set(before_base) and len(before_base) > 0
    changed = [n for n in before_base if not torch.equal(before_base[n], after_base[n])]
    assert not changed, f"base tensors that moved: {changed}"
    # the frozen parts stay frozen (the KL reference pass toggles the adapter)
    for n, p in trainer.backbone.denoiser().named_parameters():
        assert p.requires_grad == ("lora_" in n), n
    assert not any(p.requires_grad for p in trainer.backbone.text_encoder.parameters())
    # the optimiser holds exactly the LoRA tensors
    assert len(trainer.params) == len(before_lora)


def test_run_writes_checkpoint_and_metrics(trained):
    trainer, _, _, _, ckpt, _ = trained
    state = torch.load(checkpoint_path(ckpt, checkpoint_identity(trainer)), weights_only=True)
    assert state["iteration"] == 2
    assert state["config"] == checkpoint_identity(trainer)
    rows = read_jsonl(ckpt / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [0, 1]
    for r in rows:
        assert r["kl"] >= 0 and r["grad_norm"] > 0
    assert rows[1]["kl"] > 0  # after one update the policy left the reference


# -- (c) kill and resume -----------------------------------------------------------------------------

def _cfg4(**extra):
    return dict(iterations=4, checkpoint_every=2, beta=0.01, **extra)


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("full_ckpt")
    trainer = make_trainer(tiny_model_dir, ckpt, **_cfg4())
    start = lora_state(trainer)
    trainer.run(resume=False)
    return lora_state(trainer), read_jsonl(ckpt / "metrics.jsonl"), start


TIME_KEYS = ("time_sample_s", "time_reward_s", "time_opt_s", "time_iter_s")


@pytest.mark.parametrize("stop_after", [2, 3])
def test_kill_and_resume_matches_uninterrupted(tiny_model_dir, tmp_path, uninterrupted, stop_after):
    final_full, rows_full, start = uninterrupted
    ckpt = tmp_path / "ck"
    first = make_trainer(tiny_model_dir, ckpt, **_cfg4())
    out = first.run(stop_after=stop_after)
    assert out["iterations"] == stop_after and out["resumed"] is False
    assert len(read_jsonl(ckpt / "metrics.jsonl")) == stop_after
    del first  # "killed"; with stop_after = 3 the metrics hold a row past the last checkpoint (iteration 2)

    second = make_trainer(tiny_model_dir, ckpt, **_cfg4())  # a fresh base from disk
    out = second.run()
    assert out["resumed"] is True and out["iterations"] == 4
    final = lora_state(second)
    assert set(final) == set(final_full)
    for k in final_full:
        torch.testing.assert_close(final[k], final_full[k], atol=1e-6, rtol=0, msg=k)
    # training did something between the start and the end
    assert any(not torch.allclose(final_full[k], start[k]) for k in start)

    rows = read_jsonl(ckpt / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]
    for r, rf in zip(rows, rows_full):
        for key, value in rf.items():
            if key not in TIME_KEYS and not key.startswith("time_reward/"):
                assert r[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (r["iteration"], key)


def test_changed_config_starts_afresh(tiny_model_dir, tmp_path):
    """A checkpoint of another config is never resumed: the run starts at iteration 0 and replaces it."""
    ckpt = tmp_path / "ck"
    make_trainer(tiny_model_dir, ckpt, iterations=1).run()
    other = make_trainer(tiny_model_dir, ckpt, iterations=1, lr=5e-3)
    summary = other.run()
    assert summary["resumed"] is False and other.iteration == 1
    kept = [p.name for p in ckpt.glob("checkpoint-*.pt")]
    assert kept == [checkpoint_path(ckpt, checkpoint_identity(other)).name]
    assert len(read_jsonl(ckpt / "metrics.jsonl")) == 1


# -- (d) export ----------------------------------------------------------------------------------------

def test_export_round_trip(trained, tmp_path):
    trainer, _, _, summary, ckpt, tiny_model_dir = trained
    out = tmp_path / "run"
    trainer.export(out, {**summary, "base_model": str(tiny_model_dir)})
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "metrics.jsonl").read_text() == (ckpt / "metrics.jsonl").read_text()
    assert len(read_jsonl(out / "metrics.jsonl")) == 2
    s = json.loads((out / "train_summary.json").read_text())
    assert s["nfe_old"] == 4 and s["nfe_theta"] == 3
    assert s["iterations"] == 2
    assert s["base_model"] == str(tiny_model_dir)
    assert s["config"] == json.loads(json.dumps(asdict(trainer.cfg)))
    assert set(s["final_reward"]) == {REWARD}
    assert s["sec_per_iter"] > 0

    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 3, 32, 32, generator=g)
    sigma = torch.tensor([0.9, 0.5, 0.2])
    prompts = [p.text for p in trainer.prompts[:3]]
    trainer.backbone.denoiser().eval()
    loaded = load_backbone(tiny_model_dir, adapter=out / "adapter", device="cpu")
    base = load_backbone(tiny_model_dir, device="cpu")
    with torch.no_grad():
        v_trained = trainer.backbone.velocity(x, sigma, trainer.backbone.encode(prompts))
        v_loaded = loaded.velocity(x, sigma, loaded.encode(prompts))
        v_base = base.velocity(x, sigma, base.encode(prompts))
    torch.testing.assert_close(v_loaded, v_trained, atol=1e-5, rtol=1e-5)
    assert (v_loaded - v_base).abs().max() > 1e-4  # the adapter is not a no-op


# -- (e) the CLI -------------------------------------------------------------------------------------

def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, "-m", "tafs", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    from tafs.prompts import write_prompt_file

    path = tmp_path_factory.mktemp("prompts") / "train.jsonl"
    write_prompt_file(path, toy_prompts("train"))
    return path


def test_cli_train(tiny_model_dir, tmp_path, prompt_file):
    cfg = {"iterations": 2, "prompts_per_iter": 2, "group_size": 2, "checkpoint_every": 1,
           "lora": {"rank": 4, "alpha": 8}, "method": {"n_annealed": 2},
           "advantage": {"n_adv": 2, "rewards": {"toy_dense": 1.0}}}
    out, ck = tmp_path / "out", tmp_path / "ck"
    res = _cli("train", "--model", str(tiny_model_dir), "--prompts", str(prompt_file), "--cfg", json.dumps(cfg),
               "--out", str(out), "--ckpt-dir", str(ck), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert [r["iteration"] for r in read_jsonl(out / "metrics.jsonl")] == [0, 1]
    s = json.loads((out / "train_summary.json").read_text())
    assert s["nfe_old"] == 3 and s["nfe_theta"] == 2  # n_annealed = 2
    assert s["iterations"] == 2 and s["base_model"] == str(tiny_model_dir) and s["prompts"] == str(prompt_file)
    assert s["config"]["group_size"] == 2 and s["config"]["lora"] == {"rank": 4, "alpha": 8, "targets": None, "init": "default"}
    assert len(list(ck.glob("checkpoint-*.pt"))) == 1


@pytest.mark.parametrize("cfg, needle", [
    ({"iterations": 1, "lerning_rate": 0.1}, "lerning_rate"),
    ({"advantage": {"nadv": 2}}, "nadv"),
    ({"advantage": {}}, "advantage.rewards"),
    ({"advantage": {"rewards": {"toy_dense": 0.0}}}, "not all zero"),
    ({"advantage": {"rewards": {"pickscroe": 1.0}}}, "unknown reward(s) ['pickscroe']"),
])
def test_cli_train_bad_key(tiny_model_dir, tmp_path, prompt_file, cfg, needle):
    out = tmp_path / "out"
    res = _cli("train", "--model", str(tiny_model_dir), "--prompts", str(prompt_file), "--cfg", json.dumps(cfg),
               "--out", str(out), "--ckpt-dir", str(tmp_path / "ck"), cwd=tmp_path)
    assert res.returncode != 0
    assert needle in res.stderr, res.stderr
    assert "Traceback" not in res.stderr, res.stderr  # a clean message, not a crash
    assert not out.exists()


def test_a_training_reward_that_cannot_score_stops_training():
    """NaN scores (an unparsable judge answer) would poison a group's advantages: the trainer refuses them."""
    from tafs.train.scoring import finite

    ok = torch.tensor([0.5, 1.0])
    assert finite("r", ok) is ok
    with pytest.raises(RuntimeError, match="reward 'unifiedreward' could not score 1 of 3 images"):
        finite("unifiedreward", torch.tensor([1.0, float("nan"), 2.0]))
