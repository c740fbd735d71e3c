"""The trajectory every sampler returns, and the transition interface the loss re-evaluates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from tafs.models.backbone import Backbone, Cond


class Transition(Protocol):
    """One stochastic step s -> s_next: the Gaussian (mean, std) of the next state."""

    def __call__(self, backbone: Backbone, x: torch.Tensor, sigma: float, sigma_next: float,
                 cond: Cond) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (mean, std (B,), x0_hat)."""
        ...


@dataclass
class Trajectory:
    """T actions of B samples.

    states[:, j] is the input of action j (at sigmas[j]); actions[:, j] the sampled next state (at
    sigmas_next[j]); log_probs[:, j] its log-prob under the sampling policy; x0_hats[:, n] the one-step
    clean estimate of every model call (n = 0..nfe-1), except that the last entry is always the output
    image, ``x0_hats[:, -1] == final`` (the last call's clean estimate, or, with the SDE samplers'
    ``method.last_step_noise``, the noisy sample of the last SDE step); trained[j] says whether action j
    enters the loss, or trained[b, j] whether it does for sample b (DanceGRPO's per-sample subsets, every
    sample with the same count); nfe counts the sampler's model calls per sample.
    """

    states: torch.Tensor  # (B, T, C, H, W)
    actions: torch.Tensor  # (B, T, C, H, W)
    log_probs: torch.Tensor  # (B, T)
    sigmas: torch.Tensor  # (T,)
    sigmas_next: torch.Tensor  # (T,)
    x0_hats: torch.Tensor  # (B, nfe, C, H, W)
    final: torch.Tensor  # (B, C, H, W): the sample
    trained: torch.Tensor  # (T,) or (B, T) bool
    nfe: int
    action_step: torch.Tensor  # (T,) index into x0_hats of the estimate that action j produces

    @property
    def num_actions(self) -> int:
        return self.actions.shape[1]


def concat(parts: list[Trajectory]) -> Trajectory:
    """Trajectories of consecutive sample chunks (same sampler, same steps) as one."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    cat = {k: torch.cat([getattr(p, k) for p in parts]) for k in ("states", "actions", "log_probs", "x0_hats",
                                                                     "final")}
    trained = torch.cat([p.trained for p in parts]) if first.trained.ndim == 2 else first.trained
    return Trajectory(**cat, sigmas=first.sigmas, sigmas_next=first.sigmas_next, trained=trained,
                      nfe=first.nfe, action_step=first.action_step)
