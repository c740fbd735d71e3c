"""Deterministic Euler ODE sampler (the standard flow-matching inference sampler)."""

from __future__ import annotations

import torch

from tafs import flow
from tafs.models.backbone import Backbone, Cond


@torch.no_grad()
def sample_ode(backbone: Backbone, cond: Cond, noise: torch.Tensor, nfe: int, shift: float = 1.0,
               null: Cond | None = None, cfg_scale: float = 1.0) -> torch.Tensor:
    """Integrate from noise (sigma = 1) to sigma = 0 in ``nfe`` Euler steps; returns x0."""
    sigmas = flow.ode_sigmas(nfe, shift).tolist()
    x = noise
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        sig = torch.full((x.shape[0],), s, device=x.device, dtype=x.dtype)
        v = backbone.velocity_cfg(x, sig, cond, null, cfg_scale)
        x = flow.euler_step(x, v, s, s_next)
    return x
