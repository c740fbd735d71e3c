"""The TAFS annealed chain (DESIGN §4-5) against hand-unrolled computations with an analytic backbone.

The fake backbone (conftest.LinearFakeBackbone) has v(x, sigma) = 0.5 x + sigma, so
x0_hat = x - sigma v = (1 - 0.5 sigma) x - sigma^2.
"""

from __future__ import annotations

import torch
from torch.distributions import Normal

from tafs.sampling.annealed import renoise_transition, sample_annealed

B, SHAPE = 2, (1, 2, 2)
SEED = 1234


def v_fn(x, sigma):
    return 0.5 * x + sigma


def _noise():
    return torch.randn(B, *SHAPE, generator=torch.Generator().manual_seed(99))


def _ref_logp(a, mean, std):
    return Normal(mean.double(), std).log_prob(a.double()).mean(dim=(1, 2, 3))


def test_k1_step_by_hand(fake_backbone):
    x = _noise()
    cond = fake_backbone.encode(["a red square"] * B)
    traj = sample_annealed(fake_backbone, cond, x, n_annealed=1, generator=torch.Generator().manual_seed(SEED))

    # by hand: sigma 1 -> 0.5
    x0_hat1 = x - 1.0 * v_fn(x, 1.0)  # = 0.5 x - 1
    torch.testing.assert_close(x0_hat1, 0.5 * x - 1.0)
    mean = 0.5 * x0_hat1
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(SEED))
    a = mean + 0.5 * eps
    x0_hat2 = a - 0.5 * v_fn(a, 0.5)  # = 0.75 a - 0.25

    assert traj.nfe == 2
    assert traj.num_actions == 1
    assert traj.actions.shape == (B, 1, *SHAPE)
    assert traj.states.shape == (B, 1, *SHAPE)
    torch.testing.assert_close(traj.states[:, 0], x)
    torch.testing.assert_close(traj.actions[:, 0], a)
    assert traj.log_probs.shape == (B, 1)
    assert traj.log_probs.dtype == torch.float32
    torch.testing.assert_close(traj.log_probs[:, 0].double(), _ref_logp(a, mean, 0.5), rtol=1e-5, atol=1e-5)
    assert traj.x0_hats.shape == (B, 2, *SHAPE)
    torch.testing.assert_close(traj.x0_hats[:, 0], x0_hat1)
    torch.testing.assert_close(traj.x0_hats[:, 1], x0_hat2)
    torch.testing.assert_close(traj.x0_hats[:, 1], 0.75 * a - 0.25)
    torch.testing.assert_close(traj.final, x0_hat2)
    assert traj.trained.dtype == torch.bool and traj.trained.tolist() == [True]
    torch.testing.assert_close(traj.sigmas.double(), torch.tensor([1.0], dtype=torch.float64))
    torch.testing.assert_close(traj.sigmas_next.double(), torch.tensor([0.5], dtype=torch.float64))
    assert traj.action_step.tolist() == [1]
    # the model was called at (x, 1) then (a, 0.5), with per-sample sigma tensors
    assert len(fake_backbone.calls) == 2
    torch.testing.assert_close(fake_backbone.calls[0][0], x)
    torch.testing.assert_close(fake_backbone.calls[0][1], torch.ones(B))
    torch.testing.assert_close(fake_backbone.calls[1][0], a)
    torch.testing.assert_close(fake_backbone.calls[1][1], torch.full((B,), 0.5))


def test_k3_chain_by_hand(fake_backbone):
    """Unroll K = 3 (sigmas 1, .75, .5, .25) with the same eps stream."""
    x = _noise()
    cond = fake_backbone.encode(["two rings"] * B)
    traj = sample_annealed(fake_backbone, cond, x, n_annealed=3, generator=torch.Generator().manual_seed(SEED))

    g = torch.Generator().manual_seed(SEED)
    sig = [1.0, 0.75, 0.5, 0.25]
    state, states, actions, logps, x0s = x, [], [], [], []
    for n in range(3):
        s, s2 = sig[n], sig[n + 1]
        x0h = state - s * v_fn(state, s)
        mean = (1 - s2) * x0h
        a = mean + s2 * torch.randn(x.shape, generator=g)
        states.append(state), actions.append(a), logps.append(_ref_logp(a, mean, s2)), x0s.append(x0h)
        state = a
    x0s.append(state - 0.25 * v_fn(state, 0.25))

    assert traj.nfe == 4 and traj.num_actions == 3
    for j in range(3):
        torch.testing.assert_close(traj.states[:, j], states[j])
        torch.testing.assert_close(traj.actions[:, j], actions[j])
        torch.testing.assert_close(traj.log_probs[:, j].double(), logps[j], rtol=1e-5, atol=1e-5)
    for n in range(4):
        torch.testing.assert_close(traj.x0_hats[:, n], x0s[n])
    torch.testing.assert_close(traj.final, x0s[-1])
    torch.testing.assert_close(traj.sigmas.double(), torch.tensor([1.0, 0.75, 0.5], dtype=torch.float64))
    torch.testing.assert_close(traj.sigmas_next.double(), torch.tensor([0.75, 0.5, 0.25], dtype=torch.float64))
    assert traj.trained.tolist() == [True, True, True]
    assert traj.action_step.tolist() == [1, 2, 3]
    # action j produces the estimate x0_hats[:, action_step[j]], computed from actions[:, j]
    for j, n in enumerate(traj.action_step.tolist()):
        s = sig[n]
        torch.testing.assert_close(traj.x0_hats[:, n], traj.actions[:, j] - s * v_fn(traj.actions[:, j], s))


def test_k0_single_call(fake_backbone):
    x = _noise()
    cond = fake_backbone.encode(["a ring"] * B)
    traj = sample_annealed(fake_backbone, cond, x, n_annealed=0, generator=torch.Generator().manual_seed(SEED))
    assert traj.nfe == 1
    assert traj.num_actions == 0
    assert traj.actions.shape == (B, 0, *SHAPE)
    assert traj.states.shape == (B, 0, *SHAPE)
    assert traj.log_probs.shape == (B, 0)
    assert traj.trained.shape == (0,)
    assert traj.sigmas.numel() == 0 and traj.sigmas_next.numel() == 0
    assert traj.x0_hats.shape == (B, 1, *SHAPE)
    expected = x - 1.0 * v_fn(x, 1.0)
    torch.testing.assert_close(traj.final, expected)
    torch.testing.assert_close(traj.x0_hats[:, 0], expected)
    assert len(fake_backbone.calls) == 1


def test_same_seed_same_trajectory(fake_backbone):
    x = _noise()
    cond = fake_backbone.encode(["a cross"] * B)
    t1 = sample_annealed(fake_backbone, cond, x, 2, generator=torch.Generator().manual_seed(5))
    t2 = sample_annealed(fake_backbone, cond, x, 2, generator=torch.Generator().manual_seed(5))
    t3 = sample_annealed(fake_backbone, cond, x, 2, generator=torch.Generator().manual_seed(6))
    assert torch.equal(t1.actions, t2.actions) and torch.equal(t1.final, t2.final)
    assert not torch.allclose(t1.actions, t3.actions)


def test_renoise_transition_by_hand(fake_backbone):
    x = _noise()
    cond = fake_backbone.encode(["a cross"] * B)
    mean, std, x0_hat = renoise_transition(fake_backbone, x, 0.75, 0.5, cond)
    exp_x0 = x - 0.75 * v_fn(x, 0.75)  # = 0.625 x - 0.5625
    torch.testing.assert_close(x0_hat, 0.625 * x - 0.5625)
    torch.testing.assert_close(x0_hat, exp_x0)
    torch.testing.assert_close(mean, 0.5 * exp_x0)
    assert std.shape == (B,) and std.dtype == torch.float32
    torch.testing.assert_close(std, torch.full((B,), 0.5))
