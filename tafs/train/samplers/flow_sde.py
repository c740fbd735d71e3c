"""``flow_sde``: Flow-GRPO, the SDE on an ``n_steps`` Euler schedule (NFE n_steps; by default the model's own
scheduler grid, ``method.sigma_grid``); every step but the last (to sigma 0, deterministic) is stochastic and
trained.

Options as Flow-GRPO's code runs it (:mod:`tafs.train.reference`):

- ``last_step_noise``: the last step (to sigma 0) samples the SDE Gaussian (std g sqrt(sigma), mean from the same
  formula with dt = -sigma) instead of the Euler step; the output image (the one rewarded) is that noisy sample;
  the step is not trained (Flow-GRPO trains int(0.99 n_steps) = n_steps - 1 steps).
- ``timestep_fraction``: trains its first int(n_steps f) steps, in order, the same for every sample.
- ``kl: flow_grpo``: the KL term mean((mu - mu_ref)^2) / (2 g^2) with the noise level g, not the step std
  g sqrt(-dt) of the Gaussian KL (``gaussian``, default).
- ``timestep_quant``: the model is fed int(sigma q) / q, the SDE maths uses the exact sigma.
"""

from __future__ import annotations

from typing import ClassVar

from tafs.sampling.sde import flow_sde_transition
from tafs.sampling.trajectory import Transition
from tafs.train.reference import flow_grpo_num_trained
from tafs.train.samplers.base import DRIFT_OPTIONS, MethodCfg, SDESampler


class FlowSDE(SDESampler):
    name: ClassVar[str] = "flow_sde"
    default_grid: ClassVar[str | None] = "scheduler"
    options: ClassVar[frozenset[str]] = SDESampler.options | DRIFT_OPTIONS | {"last_step_noise", "timestep_fraction"}

    def trained_mask(self, cfg: MethodCfg, iteration: int) -> list[bool]:
        """Every stochastic step, or with ``timestep_fraction`` steps 0 .. int(n_steps f) - 1."""
        mask = self.stochastic_mask(cfg, iteration)
        if cfg.timestep_fraction is not None:
            k = flow_grpo_num_trained(cfg.n_steps, cfg.timestep_fraction)
            return [j < k for j in range(len(mask))]
        return mask

    def fraction_trained(self, cfg: MethodCfg) -> tuple[int, str]:
        n, f = cfg.n_steps, cfg.timestep_fraction
        return flow_grpo_num_trained(n, f), f"int({n} x {f})"

    def transition(self, cfg: MethodCfg) -> Transition:
        return flow_sde_transition(cfg.eta, cfg.timestep_quant)
