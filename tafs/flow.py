"""Flow-matching conventions shared by every sampler (DESIGN §3).

sigma in [0, 1], sigma = 1 is pure noise; x_s = (1 - s) x0 + s eps; the model predicts v = eps - x0.
"""

from __future__ import annotations

import torch


def _expand(sigma: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar or per-sample sigma over the non-batch dims of ``like``."""
    s = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if s.ndim == 0:
        return s
    return s.reshape(-1, *([1] * (like.ndim - 1)))


def interpolate(x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    s = _expand(sigma, x0)
    return (1 - s) * x0 + s * eps


def velocity_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return eps - x0


def x0_from_velocity(x: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    return x - _expand(sigma, x) * v


def eps_from_velocity(x: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    return x + (1 - _expand(sigma, x)) * v


def euler_step(x: torch.Tensor, v: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    return x + (sigma_next - sigma) * v


def time_shift(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3 resolution shift s' = k s / (1 + (k - 1) s); shift = 1 is the identity."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def ode_sigmas(nfe: int, shift: float = 1.0) -> torch.Tensor:
    """nfe + 1 sigmas from 1 to 0 for an Euler ODE sampler with ``nfe`` model calls."""
    if nfe < 1:
        raise ValueError(f"nfe must be >= 1, got {nfe}")
    return time_shift(torch.linspace(1.0, 0.0, nfe + 1, dtype=torch.float64), shift)


def scheduler_sigmas(nfe: int, shift: float = 1.0, num_train_timesteps: int = 1000) -> torch.Tensor:
    """nfe + 1 sigmas of diffusers' ``FlowMatchEulerDiscreteScheduler.set_timesteps(nfe)`` with a static ``shift``
    (what ``StableDiffusion3Pipeline`` samples with): ``linspace(1, sigma_min, nfe)`` shifted, then 0, where
    sigma_min = shift(1 / num_train_timesteps) is the scheduler's smallest training sigma, so the low end is
    shifted twice (10 steps at shift 3 end at 0.0089, not at :func:`ode_sigmas`' 0.25)."""
    if nfe < 1:
        raise ValueError(f"nfe must be >= 1, got {nfe}")
    sigma_min = float(time_shift(torch.tensor(1.0 / num_train_timesteps, dtype=torch.float64), shift))
    grid = time_shift(torch.linspace(1.0, sigma_min, nfe, dtype=torch.float64), shift)
    return torch.cat([grid, grid.new_zeros(1)])


def annealed_sigmas(n_annealed: int, shift: float = 1.0) -> torch.Tensor:
    """sigma_n = 1 - (n - 1) / (K + 1) for n = 1..K+1 (DESIGN §4): K+1 values, none zero."""
    if n_annealed < 0:
        raise ValueError(f"n_annealed must be >= 0, got {n_annealed}")
    k = n_annealed
    n = torch.arange(1, k + 2, dtype=torch.float64)
    return time_shift(1 - (n - 1) / (k + 1), shift)
