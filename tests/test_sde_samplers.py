"""The baselines' stochastic steps (DESIGN §8) and the generic SDE chain, against hand computations.

The fake backbone (conftest.LinearFakeBackbone) has v(x, sigma) = 0.5 x + sigma, so
x0_hat = x - s v = (1 - 0.5 s) x - s^2 and x + (1 - s) v = (1.5 - 0.5 s) x + s (1 - s).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from conftest import LinearFakeBackbone
from tafs import flow
from tafs.sampling.annealed import renoise_transition
from tafs.sampling.policy import gaussian_log_prob
from tafs.sampling.sde import (cps_transition, dance_sde_transition, flow_sde_transition, sample_sde,
                               velocity_and_x0)

torch.set_num_threads(1)

B, SHAPE = 2, (1, 2, 2)


def v_fn(x, s):
    return 0.5 * x + s


def _x(seed: int = 99) -> torch.Tensor:
    return torch.randn(B, *SHAPE, generator=torch.Generator().manual_seed(seed))


def _cond(bb):
    return bb.encode(["a red square"] * B)


def _ref_logp(a, mean, std):
    return Normal(mean.double(), float(std)).log_prob(a.double()).mean(dim=(1, 2, 3))


class X0FakeBackbone(LinearFakeBackbone):
    """The same model, but one that predicts x0 natively (overrides predict_x0, like the toy model)."""

    def __init__(self):
        super().__init__()
        self.x0_calls = 0

    def predict_x0(self, x, sigma, cond):
        self.x0_calls += 1
        s = sigma.reshape(-1, 1, 1, 1)
        return (1 - 0.5 * s) * x - s**2


# -- single transitions ---------------------------------------------------------------------------------

def test_flow_sde_step_by_hand(fake_backbone):
    """s = 0.6 -> 0.4, eta = 0.7: dt = -0.2, g^2 = 0.49 * 1.5 = 0.735, g^2 / (2 s) = 0.6125.

    mean = x + v dt + 0.6125 (x + 0.4 v) dt with v = 0.5 x + 0.6:
         = x - 0.1 x - 0.12 - 0.1225 (1.2 x + 0.24) = 0.753 x - 0.1494;  std = sqrt(0.735 * 0.2) = sqrt(0.147).
    """
    x = _x()
    mean, std, x0_hat = flow_sde_transition(0.7)(fake_backbone, x, 0.6, 0.4, _cond(fake_backbone))
    torch.testing.assert_close(mean, 0.753 * x - 0.1494, atol=1e-6, rtol=1e-6)
    assert std.shape == (B,) and std.dtype == torch.float32
    torch.testing.assert_close(std, torch.full((B,), math.sqrt(0.147)))
    torch.testing.assert_close(x0_hat, 0.7 * x - 0.36)
    assert len(fake_backbone.calls) == 1  # one model call per step


def test_flow_sde_step_at_sigma_one_uses_next_sigma(fake_backbone):
    """s = 1 -> 0.75, eta = 0.7: 1 - s is replaced by 1 - s' = 0.25 (the public Flow-GRPO code:
    sqrt(sigma / (1 - where(sigma == 1, sigma_max, sigma)))), so g = 0.7 * sqrt(1 / 0.25) = 1.4.
    g^2 / (2 s) = 0.98, dt = -0.25, x + (1 - s) v = x, v = 0.5 x + 1:
    mean = x - 0.25 (0.5 x + 1) - 0.245 x = 0.63 x - 0.25;  std = 1.4 * 0.5 = 0.7.
    """
    x = _x()
    mean, std, x0_hat = flow_sde_transition(0.7)(fake_backbone, x, 1.0, 0.75, _cond(fake_backbone))
    assert torch.isfinite(mean).all()
    torch.testing.assert_close(mean, 0.63 * x - 0.25, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(std, torch.full((B,), 0.7))
    torch.testing.assert_close(x0_hat, 0.5 * x - 1.0)


def test_dance_sde_step_by_hand(fake_backbone):
    """Constant g = eta = 0.3, s = 0.6 -> 0.4: g^2 / (2 s) = 0.075,
    mean = 0.9 x - 0.12 - 0.015 (1.2 x + 0.24) = 0.882 x - 0.1236;  std = 0.3 sqrt(0.2)."""
    x = _x()
    mean, std, x0_hat = dance_sde_transition(0.3)(fake_backbone, x, 0.6, 0.4, _cond(fake_backbone))
    torch.testing.assert_close(mean, 0.882 * x - 0.1236, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(std, torch.full((B,), 0.3 * math.sqrt(0.2)))
    torch.testing.assert_close(x0_hat, 0.7 * x - 0.36)
    # at s = 1 dance keeps g = eta: std = 0.3 * sqrt(0.25)
    _, std1, _ = dance_sde_transition(0.3)(fake_backbone, x, 1.0, 0.75, _cond(fake_backbone))
    torch.testing.assert_close(std1, torch.full((B,), 0.15))


@pytest.mark.parametrize("make", [flow_sde_transition, dance_sde_transition])
@pytest.mark.parametrize("s, s_next", [(0.6, 0.4), (1.0, 0.75), (0.3, 0.1)])
def test_sde_with_vanishing_eta_is_the_euler_step(fake_backbone, make, s, s_next):
    x = _x()
    mean, std, _ = make(1e-8)(fake_backbone, x, s, s_next, _cond(fake_backbone))
    euler = x + (s_next - s) * v_fn(x, s)
    assert (mean - euler).abs().max() < 1e-6
    assert std.max() < 1e-7


def test_cps_by_hand(fake_backbone):
    """eta = 0.5, s = 0.6 -> 0.4: x0_hat = 0.7 x - 0.36, eps_hat = (x - 0.4 x0_hat) / 0.6 = 1.2 x + 0.24,
    mean = 0.6 x0_hat + 0.4 cos(pi/4) eps_hat, std = 0.4 sin(pi/4)."""
    x = _x()
    mean, std, x0_hat = cps_transition(0.5)(fake_backbone, x, 0.6, 0.4, _cond(fake_backbone))
    r = math.sqrt(2) / 2
    torch.testing.assert_close(mean, 0.6 * (0.7 * x - 0.36) + 0.4 * r * (1.2 * x + 0.24), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(std, torch.full((B,), 0.4 * r))
    torch.testing.assert_close(x0_hat, 0.7 * x - 0.36)


def test_cps_eta0_is_deterministic_ddim(fake_backbone):
    x = _x()
    cond = _cond(fake_backbone)
    mean, std, x0_hat = cps_transition(0.0)(fake_backbone, x, 0.6, 0.4, cond)
    assert torch.equal(std, torch.zeros(B))
    eps_hat = (x - 0.4 * x0_hat) / 0.6
    torch.testing.assert_close(mean, 0.6 * x0_hat + 0.4 * eps_hat)
    # for a flow-matching model the deterministic DDIM step is the Euler step: 0.9 x - 0.12
    torch.testing.assert_close(mean, 0.9 * x - 0.12, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("s, s_next", [(1.0, 0.75), (0.6, 0.4), (0.5, 0.25)])
def test_cps_eta1_is_exactly_the_renoise_transition(tiny_backbone, s, s_next):
    """On a real (tiny, x0-predicting) model and random inputs: same mean, std and x0_hat, bit for bit."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, *tiny_backbone.latent_shape, generator=g)
    cond = tiny_backbone.encode(["a red square", "two blue rings"])
    with torch.no_grad():
        m1, s1, x1 = cps_transition(1.0)(tiny_backbone, x, s, s_next, cond)
        m2, s2, x2 = renoise_transition(tiny_backbone, x, s, s_next, cond)
    assert torch.equal(m1, m2) and torch.equal(s1, s2) and torch.equal(x1, x2)
    assert s1.dtype == s2.dtype == torch.float32
    torch.testing.assert_close(m1, (1 - s_next) * x1)
    torch.testing.assert_close(s1, torch.full((2,), s_next))


def test_cps_eta1_matches_renoise_on_the_fake(fake_backbone):
    x = _x(7)
    cond = _cond(fake_backbone)
    for s, s_next in [(1.0, 0.5), (0.75, 0.25)]:
        a = cps_transition(1)(fake_backbone, x, s, s_next, cond)
        b = renoise_transition(fake_backbone, x, s, s_next, cond)
        for u, w in zip(a, b):
            assert torch.equal(u, w)


def test_velocity_and_x0_one_call_either_way(fake_backbone):
    x = _x()
    cond = _cond(fake_backbone)
    v, x0 = velocity_and_x0(fake_backbone, x, 0.6, cond)
    assert len(fake_backbone.calls) == 1
    torch.testing.assert_close(v, 0.5 * x + 0.6)
    torch.testing.assert_close(x0, 0.7 * x - 0.36)
    xb = X0FakeBackbone()
    v2, x02 = velocity_and_x0(xb, x, 0.6, cond)
    assert xb.x0_calls == 1 and len(xb.calls) == 0  # only predict_x0, the model's native output
    torch.testing.assert_close(v2, 0.5 * x + 0.6, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(x02, 0.7 * x - 0.36)


# -- the chain --------------------------------------------------------------------------------------------

SIGMAS = [1.0, 0.75, 0.5, 0.25, 0.0]


def _flow_mean_std(x, s, s_next, eta):
    """The Flow-GRPO step written out independently (fake velocity)."""
    dt = s_next - s
    g = eta * math.sqrt(s / (1 - (s_next if s == 1 else s)))
    v = v_fn(x, s)
    return x + v * dt + g**2 / (2 * s) * (x + (1 - s) * v) * dt, g * math.sqrt(-dt)


def test_sample_sde_by_hand(fake_backbone):
    x = _x()
    cond = _cond(fake_backbone)
    seed, eta = 1234, 0.7
    traj = sample_sde(fake_backbone, cond, x, SIGMAS, flow_sde_transition(eta), [True, False, True],
                      torch.Generator().manual_seed(seed))

    g = torch.Generator().manual_seed(seed)  # noise is drawn only for the stochastic steps
    m0, sd0 = _flow_mean_std(x, 1.0, 0.75, eta)
    a0 = m0 + sd0 * torch.randn(x.shape, generator=g)
    a1 = a0 - 0.25 * v_fn(a0, 0.75)  # Euler 0.75 -> 0.5
    m2, sd2 = _flow_mean_std(a1, 0.5, 0.25, eta)
    a2 = m2 + sd2 * torch.randn(x.shape, generator=g)
    x0s = [x - 1.0 * v_fn(x, 1.0), a0 - 0.75 * v_fn(a0, 0.75), a1 - 0.5 * v_fn(a1, 0.5), a2 - 0.25 * v_fn(a2, 0.25)]

    assert traj.nfe == 4 and traj.num_actions == 3 and len(fake_backbone.calls) == 4
    assert traj.states.shape == traj.actions.shape == (B, 3, *SHAPE)
    assert traj.log_probs.shape == (B, 3) and traj.log_probs.dtype == torch.float32
    assert traj.x0_hats.shape == (B, 4, *SHAPE) and traj.final.shape == (B, *SHAPE)
    for j, (st, ac) in enumerate([(x, a0), (a0, a1), (a1, a2)]):
        torch.testing.assert_close(traj.states[:, j], st, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(traj.actions[:, j], ac, atol=1e-5, rtol=1e-5)
    for n in range(4):
        torch.testing.assert_close(traj.x0_hats[:, n], x0s[n], atol=1e-5, rtol=1e-5)
    assert torch.equal(traj.final, traj.x0_hats[:, -1])
    # the last step is the Euler step to 0, which is the one-step estimate
    torch.testing.assert_close(traj.final, a2 + (0 - 0.25) * v_fn(a2, 0.25), atol=1e-6, rtol=1e-6)
    # log-probs: independent reference (Normal) for the stochastic steps, 0 for the ODE step
    torch.testing.assert_close(traj.log_probs[:, 0].double(), _ref_logp(traj.actions[:, 0], m0, sd0),
                               atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(traj.log_probs[:, 2].double(), _ref_logp(traj.actions[:, 2], m2, sd2),
                               atol=1e-4, rtol=1e-5)
    assert torch.equal(traj.log_probs[:, 1], torch.zeros(B))
    assert traj.trained.dtype == torch.bool and traj.trained.tolist() == [True, False, True]
    assert traj.action_step.tolist() == [1, 2, 3]
    torch.testing.assert_close(traj.sigmas.double(), torch.tensor([1.0, 0.75, 0.5], dtype=torch.float64))
    torch.testing.assert_close(traj.sigmas_next.double(), torch.tensor([0.75, 0.5, 0.25], dtype=torch.float64))
    # the trainer's pairing: x0_hats[:, action_step[j]] is computed from actions[:, j]
    for j, n in enumerate(traj.action_step.tolist()):
        s = SIGMAS[n]
        torch.testing.assert_close(traj.x0_hats[:, n], traj.actions[:, j] - s * v_fn(traj.actions[:, j], s))


@pytest.mark.parametrize("make, eta", [(flow_sde_transition, 0.7), (dance_sde_transition, 0.3), (cps_transition, 0.6)])
def test_sample_sde_log_probs_are_the_transitions_gaussian(fake_backbone, make, eta):
    x = _x()
    cond = _cond(fake_backbone)
    tr = make(eta)
    sig = flow.ode_sigmas(5).tolist()
    traj = sample_sde(fake_backbone, cond, x, sig, tr, [True, True, False, True], torch.Generator().manual_seed(0))
    assert traj.nfe == 5 and len(fake_backbone.calls) == 5  # one model call per step
    for j in range(traj.num_actions):
        mean, std, x0_hat = tr(fake_backbone, traj.states[:, j], sig[j], sig[j + 1], cond)
        torch.testing.assert_close(x0_hat, traj.x0_hats[:, j])
        if traj.trained[j]:
            torch.testing.assert_close(traj.log_probs[:, j], gaussian_log_prob(traj.actions[:, j], mean, std))
            assert (traj.actions[:, j] - mean).abs().max() > 1e-3  # noise was added
        else:  # ODE step: exactly Euler, log-prob 0, not trained
            euler = traj.states[:, j] + (sig[j + 1] - sig[j]) * v_fn(traj.states[:, j], sig[j])
            assert torch.equal(traj.actions[:, j], euler)
            assert torch.equal(traj.log_probs[:, j], torch.zeros(B))
        if j + 1 < traj.num_actions:
            assert torch.equal(traj.states[:, j + 1], traj.actions[:, j])
    assert torch.equal(traj.final, traj.x0_hats[:, -1])
    assert traj.trained.tolist() == [True, True, False, True]


def test_sample_sde_all_ode_is_the_euler_sampler(fake_backbone):
    from tafs.sampling.ode import sample_ode

    x = _x()
    cond = _cond(fake_backbone)
    traj = sample_sde(fake_backbone, cond, x, flow.ode_sigmas(4).tolist(), flow_sde_transition(0.7), [False] * 3,
                      torch.Generator().manual_seed(0))
    assert torch.equal(traj.log_probs, torch.zeros(B, 3)) and not traj.trained.any()
    torch.testing.assert_close(traj.final, sample_ode(fake_backbone, cond, x, 4, sigmas=flow.ode_sigmas(4)), atol=1e-6,
                               rtol=1e-6)


def test_sample_sde_x0_predicting_backbone_same_chain():
    """An x0-predicting backbone (predict_x0 overridden) gives the same trajectory with one call per step."""
    x = _x()
    vb, xb = LinearFakeBackbone(), X0FakeBackbone()
    cond = _cond(vb)
    sig = flow.ode_sigmas(4).tolist()
    for make in (flow_sde_transition, cps_transition):
        t1 = sample_sde(vb, cond, x, sig, make(0.7), [True, False, True], torch.Generator().manual_seed(1))
        xb.x0_calls = 0
        t2 = sample_sde(xb, cond, x, sig, make(0.7), [True, False, True], torch.Generator().manual_seed(1))
        assert xb.x0_calls == 4 and len(xb.calls) == 0
        torch.testing.assert_close(t2.actions, t1.actions, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(t2.x0_hats, t1.x0_hats, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(t2.log_probs, t1.log_probs, atol=1e-4, rtol=1e-4)
        assert torch.equal(t2.final, t2.x0_hats[:, -1])


def test_sample_sde_single_call(fake_backbone):
    x = _x()
    traj = sample_sde(fake_backbone, _cond(fake_backbone), x, [1.0, 0.0], flow_sde_transition(0.7), [],
                      torch.Generator().manual_seed(0))
    assert traj.nfe == 1 and traj.num_actions == 0
    assert traj.actions.shape == (B, 0, *SHAPE) and traj.log_probs.shape == (B, 0) and traj.trained.shape == (0,)
    torch.testing.assert_close(traj.final, x - v_fn(x, 1.0))


def test_sample_sde_same_seed_same_trajectory(fake_backbone):
    x = _x()
    cond = _cond(fake_backbone)
    run = lambda seed: sample_sde(fake_backbone, cond, x, SIGMAS, dance_sde_transition(0.3), [True] * 3,
                                  torch.Generator().manual_seed(seed))
    t1, t2, t3 = run(5), run(5), run(6)
    assert torch.equal(t1.actions, t2.actions) and torch.equal(t1.log_probs, t2.log_probs)
    assert not torch.allclose(t1.actions, t3.actions)


@pytest.mark.parametrize("sigmas, mask, needle", [
    ([1.0, 0.5, 0.25], [True], "end at 0"),
    ([1.0, 0.5, 0.5, 0.0], [True, True], "decrease"),
    ([1.0, 0.5, 0.0], [True, True], "last step"),
    ([1.0, 0.5, 0.25, 0.0], [True], "entries"),
    ([1.0], [], "at least 2"),
])
def test_sample_sde_rejects_bad_input(fake_backbone, sigmas, mask, needle):
    with pytest.raises(ValueError, match=needle):
        sample_sde(fake_backbone, _cond(fake_backbone), _x(), sigmas, flow_sde_transition(0.7), mask,
                   torch.Generator().manual_seed(0))


def test_sample_sde_accepts_full_length_mask_with_deterministic_last(fake_backbone):
    traj = sample_sde(fake_backbone, _cond(fake_backbone), _x(), SIGMAS, flow_sde_transition(0.7),
                      [True, False, True, False], torch.Generator().manual_seed(0))
    assert traj.trained.tolist() == [True, False, True]
