"""Flow-matching conventions (DESIGN §3) against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from tafs import flow

X0 = torch.tensor([[1.0, 2.0]])
EPS = torch.tensor([[3.0, -1.0]])


def test_interpolate_by_hand():
    # x_s = (1 - s) x0 + s eps = 0.75 [1, 2] + 0.25 [3, -1] = [1.5, 1.25]
    x = flow.interpolate(X0, EPS, 0.25)
    torch.testing.assert_close(x, torch.tensor([[1.5, 1.25]]))


def test_interpolate_endpoints():
    torch.testing.assert_close(flow.interpolate(X0, EPS, 0.0), X0)
    torch.testing.assert_close(flow.interpolate(X0, EPS, 1.0), EPS)


def test_velocity_target_by_hand():
    torch.testing.assert_close(flow.velocity_target(X0, EPS), torch.tensor([[2.0, -3.0]]))


def test_velocity_target_is_time_derivative_of_interpolation():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64), torch.randn(3, 2, 4, 4, generator=g,
                                                                                       dtype=torch.float64)
    s = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64, requires_grad=True)
    xs = flow.interpolate(x0, eps, s)
    # d x_s / d s for each sample, through autograd (sum over dims weighted by an arbitrary tensor w)
    w = torch.randn(xs.shape, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((xs * w).sum(), s)
    expected = (flow.velocity_target(x0, eps) * w).sum(dim=(1, 2, 3))
    torch.testing.assert_close(grad, expected)


def test_x0_and_eps_from_velocity_by_hand():
    x = torch.tensor([[1.5, 1.25]])
    v = torch.tensor([[2.0, -3.0]])
    # x0 = x - s v = [1.5 - 0.5, 1.25 + 0.75]; eps = x + (1 - s) v = [1.5 + 1.5, 1.25 - 2.25]
    torch.testing.assert_close(flow.x0_from_velocity(x, v, 0.25), torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(flow.eps_from_velocity(x, v, 0.25), torch.tensor([[3.0, -1.0]]))


def test_per_sample_sigma_by_hand():
    x0 = torch.tensor([[1.0, 2.0], [0.0, 4.0]])
    eps = torch.tensor([[3.0, -1.0], [2.0, 2.0]])
    sigma = torch.tensor([0.25, 0.5])
    # row 0: as above; row 1: 0.5 [0, 4] + 0.5 [2, 2] = [1, 3]
    x = flow.interpolate(x0, eps, sigma)
    torch.testing.assert_close(x, torch.tensor([[1.5, 1.25], [1.0, 3.0]]))
    v = eps - x0
    torch.testing.assert_close(flow.x0_from_velocity(x, v, sigma), x0)
    torch.testing.assert_close(flow.eps_from_velocity(x, v, sigma), eps)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_per_sample_sigma_4d(dtype):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 3, 5, 5, generator=g).to(dtype)
    eps = torch.randn(4, 3, 5, 5, generator=g).to(dtype)
    sigma = torch.tensor([0.0, 0.1, 0.6, 1.0], dtype=torch.float64)
    x = flow.interpolate(x0, eps, sigma)
    assert x.dtype == dtype and x.shape == x0.shape
    # each sample uses its own sigma (not a broadcast over another dim)
    for i, s in enumerate(sigma.tolist()):
        torch.testing.assert_close(x[i], (1 - s) * x0[i] + s * eps[i])
    v = flow.velocity_target(x0, eps)
    torch.testing.assert_close(flow.x0_from_velocity(x, v, sigma), x0)
    torch.testing.assert_close(flow.eps_from_velocity(x, v, sigma), eps)


def test_round_trip_scalar_tensor_sigma():
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(2, 1, 3, 3, generator=g), torch.randn(2, 1, 3, 3, generator=g)
    s = torch.tensor(0.3)
    x = flow.interpolate(x0, eps, s)
    v = flow.velocity_target(x0, eps)
    torch.testing.assert_close(flow.x0_from_velocity(x, v, s), x0)
    torch.testing.assert_close(flow.eps_from_velocity(x, v, s), eps)


def test_euler_step_by_hand():
    x = torch.tensor([[1.0, 2.0]])
    v = torch.tensor([[2.0, -3.0]])
    # x + (0.5 - 0.75) v = [1 - 0.5, 2 + 0.75]
    torch.testing.assert_close(flow.euler_step(x, v, 0.75, 0.5), torch.tensor([[0.5, 2.75]]))


def test_euler_step_exact_for_straight_path():
    # With the true velocity (constant along the straight path) one Euler step lands exactly.
    x0, eps = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -1.0]])
    v = flow.velocity_target(x0, eps)
    x1 = flow.interpolate(x0, eps, 0.8)
    torch.testing.assert_close(flow.euler_step(x1, v, 0.8, 0.3), flow.interpolate(x0, eps, 0.3))
    torch.testing.assert_close(flow.euler_step(x1, v, 0.8, 0.0), x0)


def test_time_shift_identity():
    s = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(flow.time_shift(s, 1.0), s)


def test_time_shift_three():
    # 3 * 0.5 / (1 + 2 * 0.5) = 0.75; 3 * 0.25 / (1 + 0.5) = 0.5; endpoints fixed
    s = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(flow.time_shift(s, 3.0), torch.tensor([0.0, 0.5, 0.75, 1.0], dtype=torch.float64))


def test_ode_sigmas():
    torch.testing.assert_close(flow.ode_sigmas(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64))
    torch.testing.assert_close(flow.ode_sigmas(1), torch.tensor([1.0, 0.0], dtype=torch.float64))
    # shift 3: 0.5 -> 0.75
    torch.testing.assert_close(flow.ode_sigmas(2, shift=3.0), torch.tensor([1.0, 0.75, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("nfe", [1, 2, 4, 8, 10, 28])
@pytest.mark.parametrize("shift", [1.0, 3.0, 1.47])
def test_scheduler_sigmas_are_diffusers_flow_match_euler(nfe, shift):
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(nfe)
    ours = flow.scheduler_sigmas(nfe, shift)
    assert ours.dtype == torch.float64 and len(ours) == nfe + 1 and float(ours[-1]) == 0.0
    torch.testing.assert_close(ours, sched.sigmas.double(), atol=1e-6, rtol=0)


def test_scheduler_sigmas_shift_the_low_end_twice():
    # sigma_min = shift(0.001) = 0.003 / 1.002; 10 steps: the last non-zero level is shift(sigma_min) =
    # 3 * 0.002994 / (1 + 2 * 0.002994) = 0.00893, where shift(linspace(1, 0, 11)) has shift(0.1) = 0.25
    sig = flow.scheduler_sigmas(10, 3.0)
    assert float(sig[0]) == 1.0 and float(sig[-1]) == 0.0
    assert float(sig[-2]) == pytest.approx(0.00893, abs=1e-5)
    assert float(flow.ode_sigmas(10, 3.0)[-2]) == pytest.approx(0.25)
    # shift 1: linspace(1, 0.001, n), then 0
    torch.testing.assert_close(flow.scheduler_sigmas(3), torch.tensor([1.0, 0.5005, 0.001, 0.0], dtype=torch.float64))


def test_annealed_sigmas():
    # sigma_n = 1 - (n - 1) / (K + 1), n = 1..K+1
    torch.testing.assert_close(flow.annealed_sigmas(3), torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64))
    torch.testing.assert_close(flow.annealed_sigmas(1), torch.tensor([1.0, 0.5], dtype=torch.float64))
    torch.testing.assert_close(flow.annealed_sigmas(0), torch.tensor([1.0], dtype=torch.float64))
    s = flow.annealed_sigmas(7)
    assert len(s) == 8 and float(s.min()) == pytest.approx(1 / 8) and bool((s > 0).all())
    # shift 3 applied to [1, 0.5] -> [1, 0.75]
    torch.testing.assert_close(flow.annealed_sigmas(1, shift=3.0), torch.tensor([1.0, 0.75], dtype=torch.float64))


def test_invalid_counts_raise():
    with pytest.raises(ValueError):
        flow.ode_sigmas(0)
    with pytest.raises(ValueError):
        flow.ode_sigmas(-2)
    with pytest.raises(ValueError):
        flow.scheduler_sigmas(0)
    with pytest.raises(ValueError):
        flow.annealed_sigmas(-1)
