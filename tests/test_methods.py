"""Methods (DESIGN §8): which sampler, which actions are stochastic / trained, NFE accounting, and a short
training run of every baseline sampler on the tiny toy backbone."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conftest import LinearFakeBackbone, toy_prompts, registered_brightness
from tafs import flow
from tafs.config import ConfigError, deep_merge, from_dict
from tafs.io import read_jsonl
from tafs.models.loading import load_backbone
from tafs.sampling.annealed import renoise_transition
from tafs.sampling.policy import gaussian_log_prob
from tafs.sampling.sde import CPSTransition, DanceSDETransition, FlowSDETransition
from tafs.seeding import step_generators
from tafs.train.methods import Method, MethodConfig
from tafs.train.trainer import Trainer, TrainConfig

torch.set_num_threads(1)

B = 2
SHAPE = (1, 2, 2)


def v_fn(x, s):
    return 0.5 * x + s


def _sample(cfg: MethodConfig, iteration: int = 0, seed: int = 0, bb: LinearFakeBackbone | None = None):
    bb = bb or LinearFakeBackbone()
    x = torch.randn(B, *SHAPE, generator=torch.Generator().manual_seed(99))
    return Method(cfg).sample(bb, bb.encode(["a"] * B), x, torch.Generator().manual_seed(seed), iteration), bb


def _is_euler(traj, j, sig):
    euler = traj.states[:, j] + (sig[j + 1] - sig[j]) * v_fn(traj.states[:, j], sig[j])
    return torch.equal(traj.actions[:, j], euler)


# -- config validation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, needle", [
    ({"sampler": "sde"}, "method.sampler"),
    ({"sampler": "mix_sde", "n_steps": 5, "window": 5}, "method.window"),
    ({"sampler": "mix_sde", "window": 0}, "method.window"),
    ({"sampler": "mix_sde", "window_every": 0}, "method.window_every"),
    ({"sampler": "flow_sde", "eta": 0.0}, "method.eta"),
    ({"sampler": "dance_sde", "eta": -0.3}, "method.eta"),
    ({"sampler": "cps", "eta": 1.5}, "method.eta"),
    ({"sampler": "dance_sde", "train_fraction": 0.0}, "method.train_fraction"),
    ({"sampler": "dance_sde", "train_fraction": 1.2}, "method.train_fraction"),
    ({"sampler": "flow_sde", "n_steps": 1}, "method.n_steps"),
    ({"sampler": "flow_sde", "shift": 0.0}, "method.shift"),
])
def test_config_validation_names_the_field(kw, needle):
    with pytest.raises(ValueError, match=needle):
        MethodConfig(**kw)


def test_config_defaults_and_valid_edges():
    c = MethodConfig()
    assert (c.sampler, c.n_annealed, c.n_steps, c.eta, c.train_fraction, c.window, c.window_every) == \
        ("annealed", 3, 10, 0.7, None, 4, 25)  # train_fraction None: 0.6 (dance_sde)
    MethodConfig(sampler="mix_sde", n_steps=5, window=4)  # window = n_steps - 1 fits
    MethodConfig(sampler="cps", eta=1.0)
    MethodConfig(sampler="dance_sde", train_fraction=1.0)
    # the annealed sampler ignores the SDE fields
    MethodConfig(sampler="annealed", n_steps=1, eta=0.0, window=99)


def test_config_from_dict_with_new_keys():
    cfg = from_dict(TrainConfig, {"method": {"sampler": "mix_sde", "n_steps": 6, "eta": 0.5, "window": 2,
                                             "window_every": 3}}, "train")
    assert cfg.method == MethodConfig(sampler="mix_sde", n_steps=6, eta=0.5, window=2, window_every=3)
    with pytest.raises(ConfigError, match="method.eta"):
        from_dict(TrainConfig, {"method": {"eta": "high"}}, "train")


# -- transitions, eval samplers, NFE -----------------------------------------------------------------------

def test_transition_per_sampler():
    assert Method(MethodConfig()).transition is renoise_transition
    assert Method(MethodConfig(sampler="flow_sde", eta=0.7)).transition == FlowSDETransition(0.7)
    assert Method(MethodConfig(sampler="mix_sde", eta=0.5)).transition == FlowSDETransition(0.5)
    assert Method(MethodConfig(sampler="dance_sde", eta=0.3)).transition == DanceSDETransition(0.3)
    assert Method(MethodConfig(sampler="cps", eta=0.9)).transition == CPSTransition(0.9)


@pytest.mark.parametrize("kw, expected", [
    ({"sampler": "annealed", "n_annealed": 3}, {"nfe_old": 4, "nfe_theta": 3}),
    ({"sampler": "flow_sde", "n_steps": 10}, {"nfe_old": 10, "nfe_theta": 9}),
    ({"sampler": "dance_sde", "n_steps": 11, "train_fraction": 0.6}, {"nfe_old": 11, "nfe_theta": 6}),
    ({"sampler": "dance_sde", "n_steps": 4, "train_fraction": 0.6}, {"nfe_old": 4, "nfe_theta": 2}),  # 1.8 -> 2
    ({"sampler": "dance_sde", "n_steps": 4, "train_fraction": 0.01}, {"nfe_old": 4, "nfe_theta": 1}),  # at least 1
    ({"sampler": "mix_sde", "n_steps": 10, "window": 4}, {"nfe_old": 10, "nfe_theta": 4}),
    ({"sampler": "cps", "n_steps": 6}, {"nfe_old": 6, "nfe_theta": 5}),
])
def test_nfe_accounting(kw, expected):
    cfg = MethodConfig(**kw)
    assert Method(cfg).nfe_accounting() == expected
    # and it is what sampling does: model calls, trained actions
    traj, bb = _sample(cfg)
    assert len(bb.calls) == traj.nfe == expected["nfe_old"]
    assert int(traj.trained.sum()) == expected["nfe_theta"]


def test_sde_methods_use_the_ode_schedule_with_shift():
    traj, _ = _sample(MethodConfig(sampler="flow_sde", n_steps=4, shift=3.0, sigma_grid="linspace"))
    sig = flow.ode_sigmas(4, 3.0)
    torch.testing.assert_close(traj.sigmas.double(), sig[:3].float().double())
    torch.testing.assert_close(traj.sigmas_next.double(), sig[1:4].float().double())
    assert traj.action_step.tolist() == [1, 2, 3]


# -- which steps are stochastic and trained ----------------------------------------------------------------

def test_flow_sde_all_but_last():
    cfg = MethodConfig(sampler="flow_sde", n_steps=5)
    traj, _ = _sample(cfg)
    sig = flow.ode_sigmas(5).tolist()
    assert traj.num_actions == 4 and traj.trained.tolist() == [True] * 4
    assert not any(_is_euler(traj, j, sig) for j in range(4))
    assert (traj.log_probs != 0).all()
    assert torch.equal(traj.final, traj.x0_hats[:, -1])


def test_cps_all_non_final_steps_trained():
    traj, _ = _sample(MethodConfig(sampler="cps", n_steps=4, eta=0.7))
    assert traj.trained.tolist() == [True] * 3 and traj.nfe == 4 and (traj.log_probs != 0).all()


def test_mix_window_slides_and_wraps():
    """n_steps 7 -> 6 actions, window 2 -> 5 start positions; the window moves every 3 iterations."""
    cfg = MethodConfig(sampler="mix_sde", n_steps=7, window=2, window_every=3)
    sig = flow.ode_sigmas(7).tolist()
    expected_start = {0: 0, 1: 0, 2: 0, 3: 1, 5: 1, 6: 2, 9: 3, 12: 4, 14: 4, 15: 0, 17: 0, 18: 1, 30: 0, 44: 4}
    for it, start in expected_start.items():
        assert Method(cfg).window_start(it) == start, it
        traj, _ = _sample(cfg, iteration=it)
        window = [start <= j < start + 2 for j in range(6)]
        assert traj.trained.tolist() == window, it
        for j in range(6):
            if window[j]:
                assert traj.log_probs[:, j].abs().min() > 0 and not _is_euler(traj, j, sig), (it, j)
            else:  # outside the window: exactly the Euler ODE step
                assert _is_euler(traj, j, sig), (it, j)
                assert torch.equal(traj.log_probs[:, j], torch.zeros(B)), (it, j)


def test_mix_window_default_every_25_and_full_width():
    cfg = MethodConfig(sampler="mix_sde", n_steps=10, window=4)  # 9 actions, 6 positions
    m = Method(cfg)
    assert [m.window_start(i) for i in (0, 24, 25, 49, 50, 125, 149, 150, 175)] == [0, 0, 1, 1, 2, 5, 5, 0, 1]
    full = Method(MethodConfig(sampler="mix_sde", n_steps=5, window=4, window_every=1))
    assert all(full.window_start(i) == 0 for i in range(10))  # the window fills every step: never moves


def test_dance_trains_the_fraction_and_subsets_vary():
    cfg = MethodConfig(sampler="dance_sde", n_steps=11, train_fraction=0.6, eta=0.3)
    sig = flow.ode_sigmas(11).tolist()
    masks = set()
    for it in range(6):
        _, gen = step_generators(0, it)  # the trainer's per-iteration generator
        bb = LinearFakeBackbone()
        x = torch.randn(B, *SHAPE, generator=torch.Generator().manual_seed(99))
        traj = Method(cfg).sample(bb, bb.encode(["a"] * B), x, gen, it)
        assert traj.num_actions == 10 and int(traj.trained.sum()) == 6
        # every non-final step is stochastic (SDE), trained or not
        assert (traj.log_probs != 0).all() and not any(_is_euler(traj, j, sig) for j in range(10))
        masks.add(tuple(traj.trained.tolist()))
    assert len(masks) > 1
    # different generators, different subsets; the same generator seed, the same subset
    by_seed = {s: tuple(_sample(cfg, seed=s)[0].trained.tolist()) for s in range(5)}
    assert len(set(by_seed.values())) > 1
    assert tuple(_sample(cfg, seed=3)[0].trained.tolist()) == by_seed[3]


# -- a short training run per baseline sampler -------------------------------------------------------------

REWARD = "test_methods_brightness"


registered_reward = registered_brightness(REWARD)


def _trainer(model_dir: Path, ckpt: Path, method: dict, **override) -> Trainer:
    base = {
        "seed": 0, "iterations": 2, "prompts_per_iter": 2, "group_size": 4, "lr": 1e-2, "weight_decay": 0.0,
        "minibatches": 2, "inner_epochs": 1, "checkpoint_every": 1, "beta": 0.01, "lora": {"rank": 4, "alpha": 8},
        "method": method, "advantage": {"rewards": {REWARD: 1.0}, "n_adv": 1},
    }
    cfg = from_dict(TrainConfig, deep_merge(base, override), "train")
    return Trainer(load_backbone(model_dir, device="cpu"), cfg, ckpt, toy_prompts("train"))


def _lora(trainer: Trainer) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(trainer.backbone.denoiser()).items()}


RUNS = {
    "flow_sde": ({"sampler": "flow_sde", "n_steps": 4, "eta": 0.7}, {"nfe_old": 4, "nfe_theta": 3}),
    "dance_sde": ({"sampler": "dance_sde", "n_steps": 5, "eta": 0.3, "train_fraction": 0.6},
                  {"nfe_old": 5, "nfe_theta": 2}),
    "mix_sde": ({"sampler": "mix_sde", "n_steps": 5, "eta": 0.7, "window": 2, "window_every": 1},
                {"nfe_old": 5, "nfe_theta": 2}),
    "cps": ({"sampler": "cps", "n_steps": 4, "eta": 0.7}, {"nfe_old": 4, "nfe_theta": 3}),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_two_iteration_training_run(tiny_model_dir, tmp_path, name):
    method, nfe = RUNS[name]
    # one optimiser step per iteration, so the first iteration's ratios are all taken before any update
    trainer = _trainer(tiny_model_dir, tmp_path / "ck", method, minibatches=1)
    before = _lora(trainer)
    summary = trainer.run(resume=False)
    assert summary["iterations"] == 2
    after = _lora(trainer)
    assert set(after) == set(before)
    assert any(not torch.equal(before[k], after[k]) for k in before), "no LoRA tensor moved"
    assert all(torch.isfinite(v).all() for v in after.values())
    rows = read_jsonl(tmp_path / "ck" / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [0, 1]
    scored = method["n_steps"] - 1
    for r in rows:
        for k, v in r.items():
            assert isinstance(v, (int, float)) and math.isfinite(v), (k, v)
        assert r["nfe_old"] == nfe["nfe_old"] and r["nfe_theta"] == nfe["nfe_theta"]
        assert r["grad_norm"] > 0 and r["kl"] >= 0
        # n_adv = 1: only the final image is decoded and scored (its step label is the last one)
        steps = {k for k in r if k.startswith(f"reward/{REWARD}/step") and k.endswith("_mean")}
        assert steps == {f"reward/{REWARD}/step{scored + 1}_mean"} and f"reward/{REWARD}/final_mean" in r
    assert abs(rows[0]["ratio"] - 1) < 1e-5  # before the first update the policy is the sampling policy
    assert rows[1]["kl"] > 0  # after one update the policy left the reference
    assert len(list((tmp_path / "ck").glob("checkpoint-*.pt"))) == 1


@pytest.mark.parametrize("name", ["flow_sde", "mix_sde", "cps"])
def test_trainer_recomputes_the_sampled_log_probs(tiny_model_dir, tmp_path, name):
    """What the loss re-evaluates (method.transition in train mode) reproduces the sampler's log-probs
    on the real (x0-predicting) toy model; untrained ODE steps carry log-prob 0."""
    method, _ = RUNS[name]
    trainer = _trainer(tiny_model_dir, tmp_path / "ck", method)
    texts = [p.text for p in trainer.prompts[:2] for _ in range(2)]
    cond = trainer.encode(texts)
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn((4, *trainer.backbone.latent_shape), generator=gen)
    trainer.backbone.denoiser().eval()
    traj = trainer.method.sample(trainer.backbone, cond, noise, gen, 1)
    assert traj.num_actions == method["n_steps"] - 1 and torch.equal(traj.final, traj.x0_hats[:, -1])
    trainer.backbone.denoiser().train()
    with torch.no_grad():
        for j in range(traj.num_actions):
            s, s_next = float(traj.sigmas[j]), float(traj.sigmas_next[j])
            mean, std, x0_hat = trainer.method.transition(trainer.backbone, traj.states[:, j], s, s_next, cond)
            torch.testing.assert_close(x0_hat, traj.x0_hats[:, j], atol=1e-5, rtol=1e-5)
            if traj.trained[j]:
                torch.testing.assert_close(gaussian_log_prob(traj.actions[:, j], mean, std), traj.log_probs[:, j],
                                           atol=1e-4, rtol=0)
            else:
                assert torch.equal(traj.log_probs[:, j], torch.zeros(4))


def test_trainer_rejects_n_adv_beyond_scored_steps(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match=r"method.n_steps - 1"):
        _trainer(tiny_model_dir, tmp_path / "ck", {"sampler": "flow_sde", "n_steps": 4}, advantage={"n_adv": 4})
    # n_adv = n_steps - 1 is fine even though it exceeds the (unused) n_annealed = 3
    _trainer(tiny_model_dir, tmp_path / "ck2", {"sampler": "flow_sde", "n_steps": 6}, advantage={"n_adv": 5})
