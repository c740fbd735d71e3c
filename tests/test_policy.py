"""The shared Gaussian log-prob and KL (DESIGN §5) against torch.distributions."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from tafs.sampling.policy import gaussian_kl_same_std, gaussian_log_prob

B, SHAPE = 3, (2, 4, 4)
DIMS = (1, 2, 3)


def _tensors(seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(B, *SHAPE, generator=g, dtype=torch.float64)
    action = mean + 0.7 * torch.randn(B, *SHAPE, generator=g, dtype=torch.float64)
    return action.to(dtype), mean.to(dtype)


def _ref_log_prob(action, mean, std_b):
    """Reference in float64: std_b is (B,)."""
    a, m = action.double(), mean.double()
    s = torch.as_tensor(std_b, dtype=torch.float64).reshape(-1, 1, 1, 1).expand_as(a)
    return Normal(m, s).log_prob(a).mean(DIMS)


def test_log_prob_scalar_std():
    a, m = _tensors(0)
    out = gaussian_log_prob(a, m, 0.4)
    assert out.shape == (B,)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), _ref_log_prob(a, m, [0.4] * B), rtol=1e-5, atol=1e-5)


def test_log_prob_zero_dim_tensor_std():
    a, m = _tensors(1)
    out = gaussian_log_prob(a, m, torch.tensor(0.25))
    assert out.shape == (B,)
    torch.testing.assert_close(out.double(), _ref_log_prob(a, m, [0.25] * B), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("std_dtype", [torch.float32, torch.float64])
def test_log_prob_per_sample_std(std_dtype):
    a, m = _tensors(2)
    std = torch.tensor([0.2, 0.5, 1.3], dtype=std_dtype)
    out = gaussian_log_prob(a, m, std)
    assert out.shape == (B,)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), _ref_log_prob(a, m, std), rtol=1e-5, atol=1e-5)
    # each sample really uses its own std: differs from using the first std everywhere
    other = gaussian_log_prob(a, m, float(std[0]))
    assert not torch.allclose(out[1:], other[1:])


def test_log_prob_at_mean_is_normaliser():
    m = torch.zeros(2, 1, 2, 2)
    std = torch.tensor([1.0, 0.5])
    out = gaussian_log_prob(m, m, std)
    import math

    expected = torch.tensor([-0.5 * math.log(2 * math.pi), -math.log(0.5) - 0.5 * math.log(2 * math.pi)])
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_log_prob_is_float32_for_other_dtypes(dtype):
    a, m = _tensors(3, dtype=dtype)
    std = torch.tensor([0.3, 0.6, 0.9], dtype=dtype)
    out = gaussian_log_prob(a, m, std)
    assert out.dtype == torch.float32
    assert out.shape == (B,)
    # reference on the same (rounded) inputs, computed in float64
    torch.testing.assert_close(out.double(), _ref_log_prob(a, m, std.double()), rtol=1e-4, atol=1e-4)
    out_scalar = gaussian_log_prob(a, m, 0.5)
    assert out_scalar.dtype == torch.float32


def test_log_prob_2d_inputs():
    g = torch.Generator().manual_seed(4)
    m = torch.randn(4, 7, generator=g)
    a = m + torch.randn(4, 7, generator=g)
    std = torch.tensor([0.5, 1.0, 1.5, 2.0])
    out = gaussian_log_prob(a, m, std)
    ref = Normal(m.double(), std.double()[:, None].expand(4, 7)).log_prob(a.double()).mean(1)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


def test_log_ratio_needs_only_mean_difference():
    # log pi(a|m1) - log pi(a|m2) with the same std depends only on the quadratic terms
    a, m1 = _tensors(5)
    _, m2 = _tensors(6)
    std = torch.tensor([0.3, 0.4, 0.5])
    diff = gaussian_log_prob(a, m1, std) - gaussian_log_prob(a, m2, std)
    s = std.double().reshape(-1, 1, 1, 1)
    ref = (-(a.double() - m1.double()) ** 2 / (2 * s**2) + (a.double() - m2.double()) ** 2 / (2 * s**2)).mean(DIMS)
    torch.testing.assert_close(diff.double(), ref, rtol=1e-4, atol=1e-4)


def _ref_kl(m1, m2, std_b):
    s = torch.as_tensor(std_b, dtype=torch.float64).reshape(-1, 1, 1, 1).expand(m1.shape)
    return kl_divergence(Normal(m1.double(), s), Normal(m2.double(), s)).mean(DIMS)


def test_kl_scalar_std():
    _, m1 = _tensors(7)
    _, m2 = _tensors(8)
    out = gaussian_kl_same_std(m1, m2, 0.35)
    assert out.shape == (B,)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), _ref_kl(m1, m2, [0.35] * B), rtol=1e-5, atol=1e-6)


def test_kl_per_sample_std():
    _, m1 = _tensors(9)
    _, m2 = _tensors(10)
    std = torch.tensor([0.1, 0.5, 2.0])
    out = gaussian_kl_same_std(m1, m2, std)
    assert out.shape == (B,)
    torch.testing.assert_close(out.double(), _ref_kl(m1, m2, std), rtol=1e-5, atol=1e-6)
    assert bool((out >= 0).all())
    torch.testing.assert_close(gaussian_kl_same_std(m1, m1, std), torch.zeros(B))


def test_kl_bfloat16_is_float32():
    _, m1 = _tensors(11, dtype=torch.bfloat16)
    _, m2 = _tensors(12, dtype=torch.bfloat16)
    out = gaussian_kl_same_std(m1, m2, torch.tensor([0.5, 0.5, 0.5], dtype=torch.bfloat16))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), _ref_kl(m1, m2, [0.5] * B), rtol=1e-4, atol=1e-5)
