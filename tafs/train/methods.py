"""A method = (sampler, which actions are trained, advantage scheme) (DESIGN §8)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tafs.models.backbone import Backbone, Cond
from tafs.sampling.annealed import renoise_transition, sample_annealed
from tafs.sampling.trajectory import Trajectory, Transition

SAMPLERS = ("annealed",)


@dataclass(frozen=True)
class MethodConfig:
    sampler: str = "annealed"
    n_annealed: int = 3  # K: re-noise actions; sampling NFE = K + 1
    shift: float = 1.0

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"method.sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.n_annealed < 1:
            raise ValueError(f"method.n_annealed must be >= 1 for training, got {self.n_annealed}")


class Method:
    """Binds a config to its sampler and the transition the loss re-evaluates."""

    def __init__(self, cfg: MethodConfig):
        self.cfg = cfg

    def sample(self, backbone: Backbone, cond: Cond, noise: torch.Tensor, generator: torch.Generator,
               iteration: int) -> Trajectory:
        return sample_annealed(backbone, cond, noise, self.cfg.n_annealed, generator, self.cfg.shift)

    @property
    def transition(self) -> Transition:
        return renoise_transition

    def nfe_accounting(self) -> dict[str, int]:
        """Table 2: model calls of the old policy while sampling / of the policy while computing ratios."""
        k = self.cfg.n_annealed
        return {"nfe_old": k + 1, "nfe_theta": k}
