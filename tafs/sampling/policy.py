"""The Gaussian log-probability shared by every sampler and by the loss (DESIGN §5), and the CPS reference
code's constant-free variant (``method.cps_logprob: reference``)."""

from __future__ import annotations

import math

import torch


def gaussian_log_prob(action: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
    """log N(action; mean, std^2 I), averaged (not summed) over non-batch dims, in fp32.

    ``std`` is a scalar or a per-sample tensor (B,). Returns (B,).
    """
    a, m = action.float(), mean.float()
    std_t = torch.as_tensor(std, dtype=torch.float32, device=a.device)
    if std_t.ndim == 1:
        std_t = std_t.reshape(-1, *([1] * (a.ndim - 1)))
    dims = tuple(range(1, a.ndim))
    quad = (-((a - m) ** 2) / (2 * std_t**2)).mean(dims)
    log_std = torch.log(std_t).reshape(-1) if std_t.ndim else torch.log(std_t)
    return quad - log_std - 0.5 * math.log(2 * math.pi)


def gaussian_kl_same_std(mean: torch.Tensor, mean_ref: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
    """KL between two Gaussians of equal std: mean over dims of ||mu - mu_ref||^2 / (2 std^2). Returns (B,)."""
    std_t = torch.as_tensor(std, dtype=torch.float32, device=mean.device)
    if std_t.ndim == 1:
        std_t = std_t.reshape(-1, *([1] * (mean.ndim - 1)))
    dims = tuple(range(1, mean.ndim))
    return ((mean.float() - mean_ref.float()) ** 2 / (2 * std_t**2)).mean(dims)


def squared_error_log_prob(action: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """The log-prob of the Coefficients-Preserving Sampling reference code: -mean over non-batch dims of
    (action - mean)^2, in fp32, without the 1 / (2 std^2) factor and without the normaliser terms.
    Returns (B,)."""
    dims = tuple(range(1, action.ndim))
    return -((action.float() - mean.float()) ** 2).mean(dims)


def squared_error_kl(mean: torch.Tensor, mean_ref: torch.Tensor) -> torch.Tensor:
    """The KL term of the same reference code: mean over non-batch dims of (mu - mu_ref)^2 (no 1 / (2 std^2)).
    Returns (B,)."""
    dims = tuple(range(1, mean.ndim))
    return ((mean.float() - mean_ref.float()) ** 2).mean(dims)
