"""Deterministic Euler ODE sampler (the standard flow-matching inference sampler)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tafs import flow
from tafs.models.backbone import Backbone, Cond


@torch.no_grad()
def sample_ode(backbone: Backbone, cond: Cond, noise: torch.Tensor, nfe: int, *,
               sigmas: Sequence[float] | torch.Tensor | None = None, null: Cond | None = None,
               cfg_scale: float = 1.0) -> torch.Tensor:
    """Integrate from noise (sigma = 1) to sigma = 0 in ``nfe`` Euler steps; returns x0.

    ``sigmas`` (nfe + 1 noise levels) default to the model's own scheduler grid, ``backbone.scheduler_sigmas(nfe)``:
    what its diffusers pipeline samples with at ``num_inference_steps=nfe``. Pass ``flow.ode_sigmas(nfe, shift)``
    for the shifted uniform grid.
    """
    grid = backbone.scheduler_sigmas(nfe) if sigmas is None else sigmas
    grid = [float(s) for s in grid]
    if len(grid) != nfe + 1:
        raise ValueError(f"sigmas must hold nfe + 1 = {nfe + 1} noise levels, got {len(grid)}")
    x = noise
    for s, s_next in zip(grid[:-1], grid[1:]):
        sig = torch.full((x.shape[0],), s, device=x.device, dtype=x.dtype)
        v = backbone.velocity_cfg(x, sig, cond, null, cfg_scale)
        x = flow.euler_step(x, v, s, s_next)
    return x
