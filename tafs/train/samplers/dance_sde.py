"""``dance_sde``: DanceGRPO, the constant-g SDE (g = ``method.eta``) on every non-final step of an ``n_steps``
chain (by default on shift(linspace(1, 0, n_steps + 1))). Which actions are trained is drawn each iteration from
the sampling generator, before the noise:

- ``train_fraction`` (default 0.6): one subset of round((n_steps - 1) f) actions, rounded half up, at least 1,
  shared by the batch;
- ``timestep_fraction``: DanceGRPO's own rule, per sample a random int((n_steps - 1) f) of the steps
  (``Trajectory.trained`` is then (B, T); ``train_fraction`` must stay unset).

``kl: flow_grpo`` and ``timestep_quant`` as for ``flow_sde``.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from tafs.sampling.noise import batch_rand
from tafs.sampling.sde import dance_sde_transition
from tafs.sampling.trajectory import Transition
from tafs.train.reference import dance_num_trained, per_sample_subsets
from tafs.train.samplers.base import DRIFT_OPTIONS, MethodCfg, SDESampler


def num_trained(cfg: MethodCfg) -> int:
    """Trained actions per sample: int((n_steps - 1) timestep_fraction) (DanceGRPO), or with train_fraction
    round((n_steps - 1) train_fraction), half up, at least 1."""
    n = cfg.n_steps - 1
    if cfg.timestep_fraction is not None:
        return dance_num_trained(n, cfg.timestep_fraction)
    frac = 0.6 if cfg.train_fraction is None else cfg.train_fraction
    return min(n, max(1, int(frac * n + 0.5)))


class DanceSDE(SDESampler):
    name: ClassVar[str] = "dance_sde"
    default_grid: ClassVar[str | None] = "linspace"
    options: ClassVar[frozenset[str]] = SDESampler.options | DRIFT_OPTIONS | {"timestep_fraction"}

    def validate(self, cfg: MethodCfg) -> None:
        super().validate(cfg)
        if cfg.train_fraction is not None and not 0 < cfg.train_fraction <= 1:
            raise ValueError(f"method.train_fraction must be in (0, 1], got {cfg.train_fraction}")

    def fraction_trained(self, cfg: MethodCfg) -> tuple[int, str]:
        n, f = cfg.n_steps - 1, cfg.timestep_fraction
        return dance_num_trained(n, f), f"int({n} x {f})"

    def trained(self, cfg: MethodCfg, iteration: int, rows: int, generator: torch.Generator) -> torch.Tensor:
        """(T,) one subset for the batch (train_fraction), or (rows, T) one per sample (timestep_fraction, drawn
        for the global batch inside ``tafs.sampling.noise.sharded`` so a sample's subset ignores the sharding)."""
        n, k = self.num_actions(cfg), num_trained(cfg)
        if cfg.timestep_fraction is not None:
            return per_sample_subsets(batch_rand((rows, n), generator, generator.device).cpu(), k)
        trained = torch.zeros(n, dtype=torch.bool)
        trained[torch.randperm(n, generator=generator)[:k]] = True
        return trained

    def nfe_theta(self, cfg: MethodCfg) -> int:
        """The number drawn each iteration."""
        return num_trained(cfg)

    def transition(self, cfg: MethodCfg) -> Transition:
        return dance_sde_transition(cfg.eta, cfg.timestep_quant)
