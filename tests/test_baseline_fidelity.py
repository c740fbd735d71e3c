"""The options that run the SDE baselines as their authors' code does (tafs/train/methods.py), against hand
computations: ``cps_logprob``, ``last_step_noise``, ``same_init_noise`` and ``window_wrap``.

The fake backbone (conftest.LinearFakeBackbone) has v(x, sigma) = 0.5 x + sigma, so
x0_hat = x - s v = (1 - 0.5 s) x - s^2 and x + (1 - s) v = (1.5 - 0.5 s) x + s (1 - s).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conftest import LinearFakeBackbone, toy_prompts, registered_brightness
from tafs.config import ConfigError, deep_merge, from_dict
from tafs.models.loading import load_backbone
from tafs.sampling.noise import initial_noise
from tafs.sampling.policy import squared_error_log_prob
from tafs.sampling.sde import CPSTransition, cps_transition, flow_sde_transition, sample_sde
from tafs.train.loss import ppo_clip_loss
from tafs.train.methods import Method, MethodConfig
from tafs.train.shard import Shard
from tafs.train.trainer import Trainer, TrainConfig

torch.set_num_threads(1)

B, SHAPE = 2, (1, 2, 2)


def _x(seed: int = 99) -> torch.Tensor:
    return torch.randn(B, *SHAPE, generator=torch.Generator().manual_seed(seed))


def _eps(seed: int, rows: int = B) -> torch.Tensor:
    """The first standard-normal draw of a fresh generator: the noise a sampler's first stochastic step adds."""
    return torch.randn(rows, *SHAPE, generator=torch.Generator().manual_seed(seed))


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(1, *SHAPE)


# -- validation --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, needle", [
    ({"sampler": "cps", "cps_logprob": "exact"}, "method.cps_logprob"),
    ({"sampler": "flow_sde", "cps_logprob": "reference"}, "method.cps_logprob"),
    ({"sampler": "annealed", "cps_logprob": "reference"}, "method.cps_logprob"),
    ({"sampler": "dance_sde", "last_step_noise": True}, "method.last_step_noise"),
    ({"sampler": "cps", "last_step_noise": True}, "method.last_step_noise"),
    ({"sampler": "annealed", "last_step_noise": True}, "method.last_step_noise"),
    ({"sampler": "flow_sde", "window_wrap": False}, "method.window_wrap"),
    ({"sampler": "flow_sde", "last_step_noise": 1}, "method.last_step_noise"),
    ({"sampler": "annealed", "same_init_noise": "yes"}, "method.same_init_noise"),
])
def test_options_are_validated_naming_the_key(kw, needle):
    with pytest.raises(ValueError, match=needle):
        MethodConfig(**kw)


def test_options_default_off_and_valid_combinations():
    c = MethodConfig()
    assert (c.cps_logprob, c.last_step_noise, c.same_init_noise, c.window_wrap) == ("gaussian", False, False, True)
    MethodConfig(sampler="cps", cps_logprob="reference")
    MethodConfig(sampler="flow_sde", last_step_noise=True)
    MethodConfig(sampler="mix_sde", last_step_noise=True, window_wrap=False)
    for s in ("annealed", "flow_sde", "dance_sde", "mix_sde", "cps"):
        MethodConfig(sampler=s, same_init_noise=True)
    cfg = from_dict(TrainConfig, {"method": {"sampler": "cps", "cps_logprob": "reference",
                                             "same_init_noise": True}}, "train")
    assert cfg.method == MethodConfig(sampler="cps", cps_logprob="reference", same_init_noise=True)
    with pytest.raises(ConfigError, match="method.last_step_noise"):
        from_dict(TrainConfig, {"method": {"sampler": "flow_sde", "last_step_noise": "on"}}, "train")


# -- 1. cps_logprob: reference ----------------------------------------------------------------------------

def test_reference_cps_log_prob_by_hand():
    """Sample 0: a - mu = (0.5, 0, 1, -1) -> squares (0.25, 0, 1, 1), mean 2.25 / 4 = 0.5625 -> -0.5625.
    Sample 1: a - mu = -0.2 everywhere -> mean square 0.04 -> -0.04. No std, no constants."""
    a = torch.cat([_t(1, 2, 3, 4), _t(0, 0, 0, 0)])
    mu = torch.cat([_t(0.5, 2, 2, 5), _t(0.2, 0.2, 0.2, 0.2)])
    expected = torch.tensor([-0.5625, -0.04])
    torch.testing.assert_close(squared_error_log_prob(a, mu), expected)
    for std in (0.1, torch.tensor([0.3, 2.0])):  # the std does not enter
        torch.testing.assert_close(CPSTransition(0.7, "reference").log_prob(a, mu, std), expected)
    m = Method(MethodConfig(sampler="cps", eta=0.7, cps_logprob="reference"))
    assert m.transition == CPSTransition(0.7, "reference")
    torch.testing.assert_close(m.log_prob(a, mu, 0.1), expected)
    # the default keeps the Gaussian: sample 1 with std 0.5: -0.04 / (2 * 0.25) - log 0.5 - 0.5 log(2 pi)
    gauss = Method(MethodConfig(sampler="cps", eta=0.7)).log_prob(a, mu, 0.5)
    torch.testing.assert_close(gauss[1], torch.tensor(-0.08 + math.log(2) - 0.5 * math.log(2 * math.pi)))


def test_reference_ratio_is_exp_of_the_difference_of_mean_squares():
    """a = (1, 2, 3, 4); mu_old = a + (0.1, -0.1, 0.2, 0) -> logp_old = -(0.01 + 0.01 + 0.04 + 0) / 4 = -0.015;
    mu_new = a + (0.3, 0, 0, 0.1) -> logp_new = -(0.09 + 0.01) / 4 = -0.025; ratio = exp(-0.01).
    The Gaussian with std 0.5 would give exp(-0.01 / (2 * 0.25)) = exp(-0.02).
    KL term: mu_new - mu_old = (0.2, 0.1, -0.2, 0.1) -> reference mean square 0.025; Gaussian 0.025 / 0.5 = 0.05."""
    a = _t(1, 2, 3, 4)
    mu_old, mu_new = a + _t(0.1, -0.1, 0.2, 0), a + _t(0.3, 0, 0, 0.1)
    ref = Method(MethodConfig(sampler="cps", cps_logprob="reference"))
    gauss = Method(MethodConfig(sampler="cps"))
    adv, eps = torch.ones(1), 1.0  # a wide clip range: the ratio itself is reported
    parts = ppo_clip_loss(ref.log_prob(a, mu_new, 0.5), ref.log_prob(a, mu_old, 0.5), adv, eps)
    torch.testing.assert_close(parts.ratio_mean, torch.tensor(math.exp(-0.01)))
    parts = ppo_clip_loss(gauss.log_prob(a, mu_new, 0.5), gauss.log_prob(a, mu_old, 0.5), adv, eps)
    torch.testing.assert_close(parts.ratio_mean, torch.tensor(math.exp(-0.02)))
    torch.testing.assert_close(ref.kl(mu_new, mu_old, 0.5), torch.tensor([0.025]))
    torch.testing.assert_close(gauss.kl(mu_new, mu_old, 0.5), torch.tensor([0.05]))


def test_reference_log_prob_is_what_the_sampler_records():
    """sigmas (1, 0.5, 0), eta 0.5 (cos = sin = sqrt(1/2)), step 0 stochastic. At s = 1: x0_hat = 0.5 x - 1,
    eps_hat = x; mean = 0.5 x0_hat + 0.5 sqrt(1/2) x = (0.25 + sqrt(1/2) / 2) x - 0.5, std = sqrt(1/2) / 2, so
    a = mean + std eps and the recorded log-prob is -mean((std eps)^2) = -mean(eps^2) / 8."""
    bb, x = LinearFakeBackbone(), _x()
    traj = sample_sde(bb, bb.encode(["a"] * B), x, [1.0, 0.5, 0.0], cps_transition(0.5, "reference"), [True],
                      torch.Generator().manual_seed(5))
    eps, std = _eps(5), math.sqrt(0.5) / 2
    torch.testing.assert_close(traj.actions[:, 0], (0.25 + std) * x - 0.5 + std * eps)
    torch.testing.assert_close(traj.log_probs[:, 0], -(eps**2).mean(dim=(1, 2, 3)) / 8)
    gauss = sample_sde(bb, bb.encode(["a"] * B), x, [1.0, 0.5, 0.0], cps_transition(0.5), [True],
                       torch.Generator().manual_seed(5))
    torch.testing.assert_close(gauss.log_probs[:, 0], -(eps**2).mean(dim=(1, 2, 3)) / 2 - math.log(std)
                               - 0.5 * math.log(2 * math.pi))


# -- 2. last_step_noise -------------------------------------------------------------------------------------

def test_last_step_sde_mean_and_std_by_hand():
    """s = 0.2 -> 0, eta = 0.7: g = 0.7 sqrt(0.2 / 0.8) = 0.35, g^2 = 0.1225, dt = -0.2, g^2 / (2 s) = 0.30625;
    v = 0.5 x + 0.2: mean = x - 0.2 v - 0.06125 (x + 0.8 v) = 0.9 x - 0.04 - 0.06125 (1.4 x + 0.16)
    = 0.81425 x - 0.0498; std = g sqrt(0.2) = sqrt(0.0245); x0_hat = x - 0.2 v = 0.9 x - 0.04."""
    bb, x = LinearFakeBackbone(), _x()
    mean, std, x0_hat = flow_sde_transition(0.7)(bb, x, 0.2, 0.0, bb.encode(["a"] * B))
    torch.testing.assert_close(mean, 0.81425 * x - 0.0498)
    torch.testing.assert_close(std, torch.full((B,), math.sqrt(0.0245)))
    torch.testing.assert_close(x0_hat, 0.9 * x - 0.04)


def test_last_step_noise_final_image_by_hand():
    """sigmas (1, 0.2, 0), step 0 Euler (no draw): x1 = x - 0.8 (0.5 x + 1) = 0.6 x - 0.8. The last step draws
    the generator's first noise eps: final = 0.81425 x1 - 0.0498 + sqrt(0.0245) eps, i.e. the clean estimate
    x0_hat = 0.9 x1 - 0.04 shifted by the SDE drift -(g^2 / 2)(x1 + 0.8 v) = -0.08575 x1 - 0.0098 plus the
    sampled noise term g sqrt(s) eps. Without the option the output is x0_hat exactly."""
    bb, x = LinearFakeBackbone(), _x()
    run = lambda last: sample_sde(bb, bb.encode(["a"] * B), x, [1.0, 0.2, 0.0], flow_sde_transition(0.7), [False],
                                  torch.Generator().manual_seed(11), last_noise=last)
    noisy, plain = run(True), run(False)
    x1, eps = 0.6 * x - 0.8, _eps(11)
    torch.testing.assert_close(noisy.actions[:, 0], x1)
    x0_hat = 0.9 * x1 - 0.04
    torch.testing.assert_close(plain.final, x0_hat)
    torch.testing.assert_close(noisy.final, x0_hat - 0.08575 * x1 - 0.0098 + math.sqrt(0.0245) * eps)
    # the invariant the trainer's rewards rely on: the last scored estimate is the output image
    assert torch.equal(noisy.x0_hats[:, -1], noisy.final) and torch.equal(plain.x0_hats[:, -1], plain.final)
    torch.testing.assert_close(noisy.x0_hats[:, 0], 0.5 * x - 1)  # the first call's estimate is untouched
    # the last step is not an action: nothing about the actions changes
    assert noisy.num_actions == 1 and noisy.trained.tolist() == [False] and noisy.nfe == 2
    assert torch.equal(noisy.log_probs, plain.log_probs)


@pytest.mark.parametrize("sampler", ["flow_sde", "mix_sde"])
def test_last_step_noise_keeps_the_actions_and_changes_only_the_output(sampler):
    """The extra draw comes after every action's: the same generator gives the same actions and log-probs."""
    bb = LinearFakeBackbone()
    x = _x()
    kw = {"sampler": sampler, "n_steps": 5, "window": 2, "window_every": 1}
    run = lambda last: Method(MethodConfig(**kw, last_step_noise=last)).sample(
        bb, bb.encode(["a"] * B), x, torch.Generator().manual_seed(3), 1)
    on, off = run(True), run(False)
    assert torch.equal(on.actions, off.actions) and torch.equal(on.log_probs, off.log_probs)
    assert torch.equal(on.trained, off.trained) and on.nfe == off.nfe == 5
    assert torch.equal(on.x0_hats[:, :-1], off.x0_hats[:, :-1])
    assert not torch.allclose(on.final, off.final) and torch.equal(on.x0_hats[:, -1], on.final)


# -- 3. same_init_noise --------------------------------------------------------------------------------------

def test_same_init_noise_groups_and_shards():
    """4 prompts x G = 3: the plain draw is torch.randn(12, ...); with the option row i is row 3 (i // 3) of it."""
    plain = torch.randn(12, *SHAPE, generator=torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(7)
    same = initial_noise(4, 3, SHAPE, gen, same_in_group=True)
    for i in range(12):
        assert torch.equal(same[i], plain[3 * (i // 3)]), i
    firsts = same[::3]
    assert all(not torch.equal(firsts[p], firsts[q]) for p in range(4) for q in range(p))
    # the generator advances as without the option, so everything drawn after is unchanged
    after = torch.Generator().manual_seed(7)
    torch.randn(12, *SHAPE, generator=after)
    assert torch.equal(gen.get_state(), after.get_state())
    assert torch.equal(initial_noise(4, 3, SHAPE, torch.Generator().manual_seed(7)), plain)  # off: the plain draw
    # 1 vs 2 processes: each keeps its rows of the same global draw, so sample i sees the same noise
    rows = []
    for rank in range(2):
        start, stop = Shard(rank, 2).samples(4, 3)
        rows.append(initial_noise(4, 3, SHAPE, torch.Generator().manual_seed(7), True)[start:stop])
    assert [r.shape[0] for r in rows] == [6, 6]
    start, stop = Shard(0, 1).samples(4, 3)
    assert (start, stop) == (0, 12)
    assert torch.equal(torch.cat(rows), same[start:stop])


# -- 4. window_wrap -----------------------------------------------------------------------------------------

def test_window_positions_with_and_without_wrap():
    """n_steps 10 -> 9 actions, window 4 -> positions 0..5; window_every 12: k = iteration // 12.
    iteration 80: k = 6 -> wrap 6 % 6 = 0, no wrap min(6, 5) = 5; 71: k = 5 -> 5 both;
    144: k = 12 -> 0 / 5; 1000: k = 83 -> 83 % 6 = 5 / 5; 13: k = 1 -> 1 both."""
    kw = {"sampler": "mix_sde", "n_steps": 10, "window": 4, "window_every": 12}
    wrap, stop = Method(MethodConfig(**kw)), Method(MethodConfig(**kw, window_wrap=False))
    cases = {0: (0, 0), 13: (1, 1), 71: (5, 5), 80: (0, 5), 144: (0, 5), 1000: (5, 5)}
    for it, (w, s) in cases.items():
        assert (wrap.window_start(it), stop.window_start(it)) == (w, s), it
    assert stop.stochastic_mask(80) == [False] * 5 + [True] * 4
    assert wrap.stochastic_mask(80) == [True] * 4 + [False] * 5


# -- one trainer iteration per option on the toy backbone ----------------------------------------------------

REWARD = "test_fidelity_brightness"


registered_reward = registered_brightness(REWARD)


def _trainer(model_dir: Path, ckpt: Path, method: dict) -> Trainer:
    cfg = from_dict(TrainConfig, deep_merge({
        "seed": 0, "iterations": 1, "prompts_per_iter": 2, "group_size": 3, "lr": 1e-2, "weight_decay": 0.0,
        "minibatches": 1, "inner_epochs": 1, "checkpoint_every": 1, "beta": 0.01, "lora": {"rank": 4, "alpha": 8},
        "advantage": {"rewards": {REWARD: 1.0}, "n_adv": 1}}, {"method": method}), "train")
    return Trainer(load_backbone(model_dir, device="cpu"), cfg, ckpt, toy_prompts("train"))


def _spy(trainer: Trainer, monkeypatch) -> dict:
    """Records the initial noise, the conditioning, the trajectory, what score_steps was given and the
    last state's clean estimate."""
    seen: dict = {}
    sample, score = trainer.sample, trainer.score_steps

    def spy_sample(cond, noise, gen, it, rows):
        seen["noise"], seen["cond"] = noise.clone(), cond
        seen["traj"] = sample(cond, noise, gen, it, rows)
        return seen["traj"]

    def spy_score(prompts, x0_hats):
        seen["scored"], traj = x0_hats.clone(), seen["traj"]
        if traj.num_actions:  # the old policy's clean estimate from the last state (before any update)
            x = traj.actions[:, -1]
            with torch.no_grad():
                seen["est"] = trainer.backbone.predict_x0(x, torch.full((x.shape[0],), float(traj.sigmas_next[-1])),
                                                          seen["cond"])
        return score(prompts, x0_hats)

    monkeypatch.setattr(trainer, "sample", spy_sample)
    monkeypatch.setattr(trainer, "score_steps", spy_score)
    return seen


OPTIONS = {
    "cps_reference": {"sampler": "cps", "n_steps": 4, "eta": 0.7, "cps_logprob": "reference"},
    "flow_last_noise": {"sampler": "flow_sde", "n_steps": 4, "last_step_noise": True},
    "mix_last_noise_no_wrap": {"sampler": "mix_sde", "n_steps": 5, "window": 2, "window_every": 1,
                               "last_step_noise": True, "window_wrap": False},
    "annealed_same_noise": {"sampler": "annealed", "n_annealed": 2, "same_init_noise": True},
    "dance_same_noise": {"sampler": "dance_sde", "n_steps": 4, "eta": 0.3, "same_init_noise": True},
    # tafs/train/reference.py: the options of tests/test_reference_fidelity.py through one real iteration
    "flow_fraction_kl": {"sampler": "flow_sde", "n_steps": 5, "timestep_fraction": 0.6, "kl": "flow_grpo",
                         "last_step_noise": True},
    "dance_per_sample_quant": {"sampler": "dance_sde", "n_steps": 5, "eta": 0.3, "timestep_fraction": 0.6,
                               "timestep_quant": 1000},
    "mix_reference_window": {"sampler": "mix_sde", "n_steps": 5, "window": 2, "window_every": 1,
                             "window_rule": "mixgrpo", "timestep_quant": 1000},
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_one_trainer_iteration_per_option(tiny_model_dir, tmp_path, monkeypatch, name):
    method = OPTIONS[name]
    trainer = _trainer(tiny_model_dir, tmp_path / "ck", method)
    seen = _spy(trainer, monkeypatch)
    row = trainer.iterate()
    assert all(math.isfinite(v) for v in row.values() if isinstance(v, float)), row
    assert row["grad_norm"] > 0
    # one optimiser step, taken after every ratio: the loss re-evaluates exactly what the sampler recorded
    assert abs(row["ratio"] - 1) < 1e-5 and row["approx_kl"] < 1e-9 and row["kl"] < 1e-12, row
    traj, noise = seen["traj"], seen["noise"]
    # only the estimates the advantages read are scored: the last n_adv (1 here: the final image)
    k = min(trainer.cfg.advantage.n_adv, traj.x0_hats.shape[1] - 1)
    assert torch.equal(seen["scored"], traj.x0_hats[:, -k:]) and torch.equal(traj.x0_hats[:, -1], traj.final)
    groups = noise.reshape(2, 3, *noise.shape[1:])
    same_in_group = all(torch.equal(g[0], g[k]) for g in groups for k in (1, 2))
    assert same_in_group == method.get("same_init_noise", False)
    assert not torch.equal(groups[0, 0], groups[1, 0])
    if method.get("last_step_noise"):  # the rewarded image is the noisy last sample, not the model's estimate
        assert (traj.final - seen["est"]).abs().mean() > 1e-2
    else:  # the default: the output is the last call's clean estimate
        torch.testing.assert_close(traj.final, seen["est"])
    if method["sampler"] == "mix_sde":
        assert traj.trained.tolist() == [True, True, False, False]  # iteration 0: the window's first position
    if name == "flow_fraction_kl":
        assert traj.trained.tolist() == [True, True, True, False]  # int(5 x 0.6) = 3 first steps
    if name == "dance_per_sample_quant":  # int(4 x 0.6) = 2 per sample
        assert traj.trained.shape == (6, 4) and traj.trained.sum(1).tolist() == [2] * 6
