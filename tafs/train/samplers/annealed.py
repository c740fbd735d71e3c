"""``annealed``: the TAFS chain (DESIGN §4-5): K = ``method.n_annealed`` re-noise actions, NFE K + 1, every action
trained; models trained with it are evaluated with the same chain. ``method.shift`` (None: the model's own)
shifts its sigmas."""

from __future__ import annotations

from typing import ClassVar

import torch

from tafs import flow
from tafs.sampling.annealed import renoise_transition, sample_annealed
from tafs.sampling.trajectory import Trajectory, Transition
from tafs.train.samplers.base import Backbone, Cond, MethodCfg, Sampler


class Annealed(Sampler):
    name: ClassVar[str] = "annealed"
    eval_sampler: ClassVar[str] = "annealed"
    num_actions_rule: ClassVar[str] = "method.n_annealed"

    def num_actions(self, cfg: MethodCfg) -> int:
        return cfg.n_annealed

    def sigmas(self, cfg: MethodCfg, backbone: Backbone | None = None) -> torch.Tensor:
        """The K + 1 annealed sigmas (none zero)."""
        return flow.annealed_sigmas(cfg.n_annealed, cfg.shift)

    def sample(self, cfg: MethodCfg, backbone: Backbone, cond: Cond, noise: torch.Tensor,
               generator: torch.Generator, iteration: int) -> Trajectory:
        return sample_annealed(backbone, cond, noise, cfg.n_annealed, generator, cfg.shift)

    def transition(self, cfg: MethodCfg) -> Transition:
        return renoise_transition

    def nfe_accounting(self, cfg: MethodCfg) -> dict[str, int]:
        return {"nfe_old": cfg.n_annealed + 1, "nfe_theta": cfg.n_annealed}
