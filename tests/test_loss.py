"""PPO-clip surrogate with a KL penalty (DESIGN §7), against a hand-computed example."""

from __future__ import annotations

import math

import pytest
import torch

from tafs.train.loss import ppo_clip_loss

torch.set_num_threads(1)

CLIP = 0.2
# log pi_old, the log-ratio delta = log pi - log pi_old, and the advantages, chosen to hit every case
LOGP_OLD = [0.5, -1.0, 2.0, 0.0, 0.3, -0.2, 1.0]
DELTA = [0.0, 0.3, -0.3, 0.1, -0.1, 0.3, -0.3]
ADV = [1.0, 1.0, -1.0, -1.0, 2.0, -1.0, 1.0]
# per sample: (min(r A, clip(r) A) by hand, whether the clipped term is the one the min picks)
#  0: r = 1, A = 1                       -> 1
#  1: r = e^.3 = 1.3499 > 1.2, A = +1    -> min(1.3499, 1.2) = 1.2               clipped
#  2: r = e^-.3 = 0.7408 < 0.8, A = -1   -> min(-0.7408, -0.8) = -0.8            clipped
#  3: r = e^.1, A = -1 (inside)          -> -e^.1
#  4: r = e^-.1, A = 2 (inside)          -> 2 e^-.1
#  5: r = e^.3 > 1.2, A = -1             -> min(-1.3499, -1.2) = -1.3499         unclipped (outside the range!)
#  6: r = e^-.3 < 0.8, A = +1            -> min(0.7408, 0.8) = 0.7408            unclipped (outside the range!)
R = [math.exp(d) for d in DELTA]
TERMS = [1.0, 1.2, -0.8, -math.exp(0.1), 2 * math.exp(-0.1), -math.exp(0.3), math.exp(-0.3)]
CLIPPED = [False, True, True, False, False, False, False]
N = len(ADV)


def _inputs():
    logp_old = torch.tensor(LOGP_OLD, dtype=torch.float64)
    logp = (logp_old + torch.tensor(DELTA, dtype=torch.float64)).requires_grad_(True)
    return logp, logp_old, torch.tensor(ADV, dtype=torch.float64)


def test_hand_terms_are_consistent():
    # guard the hand table itself against typos
    for r, a, term, clipped in zip(R, ADV, TERMS, CLIPPED):
        assert term == pytest.approx(min(r * a, min(max(r, 1 - CLIP), 1 + CLIP) * a))
        assert clipped == (min(max(r, 1 - CLIP), 1 + CLIP) * a < r * a)


def test_policy_loss_by_hand():
    logp, logp_old, adv = _inputs()
    parts = ppo_clip_loss(logp, logp_old, adv, CLIP)
    expected = -sum(TERMS) / N
    assert float(parts.policy) == pytest.approx(expected, abs=1e-10)
    assert float(parts.loss.detach()) == pytest.approx(expected, abs=1e-10)
    assert float(parts.kl) == 0.0
    # |r - 1| > eps for samples 1, 2, 5, 6
    assert float(parts.clip_frac) == pytest.approx(4 / 7)
    assert float(parts.approx_kl) == pytest.approx(0.5 * sum(d * d for d in DELTA) / N)
    assert float(parts.ratio_mean) == pytest.approx(sum(R) / N)
    # the diagnostics are detached; the loss is not
    assert parts.loss.requires_grad
    for t in (parts.policy, parts.kl, parts.clip_frac, parts.approx_kl, parts.ratio_mean):
        assert not t.requires_grad


def test_gradient_zero_exactly_where_clipped_term_wins():
    logp, logp_old, adv = _inputs()
    ppo_clip_loss(logp, logp_old, adv, CLIP).loss.backward()
    grad = logp.grad
    for i in range(N):
        if CLIPPED[i]:
            assert grad[i] == 0, (i, grad[i])
        else:
            # d/dlogp of -(1/N) r A with r = exp(logp - logp_old)
            assert float(grad[i]) == pytest.approx(-R[i] * ADV[i] / N, rel=1e-9), i
            assert grad[i] != 0


def test_ratio_one_is_plain_policy_gradient():
    g = torch.Generator().manual_seed(0)
    logp = torch.randn(16, generator=g, dtype=torch.float64).requires_grad_(True)
    adv = torch.randn(16, generator=g, dtype=torch.float64)
    parts = ppo_clip_loss(logp, logp.detach().clone(), adv, 1e-3)
    parts.loss.backward()
    assert float(parts.policy) == pytest.approx(-float(adv.mean()))
    assert float(parts.clip_frac) == 0.0
    assert float(parts.approx_kl) == 0.0
    assert float(parts.ratio_mean) == pytest.approx(1.0)
    torch.testing.assert_close(logp.grad, -adv / 16)


def test_kl_term_adds_beta_mean_kl():
    logp, logp_old, adv = _inputs()
    kl = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], dtype=torch.float64, requires_grad=True)
    beta = 0.5
    parts = ppo_clip_loss(logp, logp_old, adv, CLIP, kl=kl, beta=beta)
    policy = -sum(TERMS) / N
    assert float(parts.kl) == pytest.approx(0.4)
    assert float(parts.policy) == pytest.approx(policy)
    assert float(parts.loss.detach()) == pytest.approx(policy + beta * 0.4)
    parts.loss.backward()
    torch.testing.assert_close(kl.grad, torch.full((N,), beta / N, dtype=torch.float64))
    # the KL term does not change the policy gradient
    for i in range(N):
        expected = 0.0 if CLIPPED[i] else -R[i] * ADV[i] / N
        assert float(logp.grad[i]) == pytest.approx(expected, abs=1e-12)


def test_kl_with_zero_beta_reported_but_not_added():
    logp, logp_old, adv = _inputs()
    kl = torch.full((N,), 2.0, dtype=torch.float64)
    parts = ppo_clip_loss(logp, logp_old, adv, CLIP, kl=kl, beta=0.0)
    assert float(parts.kl) == pytest.approx(2.0)
    assert float(parts.loss.detach()) == pytest.approx(-sum(TERMS) / N)
