"""The sampler interface a method delegates to (:class:`tafs.train.methods.Method`), and the SDE chains' shared base.

A sampler is stateless: every method takes the run's :class:`tafs.train.methods.MethodConfig` (``cfg``), already
validated for the options every sampler shares. Its class attributes say what the rest of the code may ask of it:

- ``name``: the ``method.sampler`` value (the registry key, the schema enum entry).
- ``eval_sampler``: how a model trained with it is evaluated when ``methods.X.eval_sampler`` is unset
  (``tafs.grid.natural_sampler``): ``annealed`` (the chain it trains) or ``ode`` (the Euler ODE).
- ``num_actions_rule``: where the action count comes from, for error messages (``method.n_steps - 1``).
- ``default_grid``: the sigma grid when ``method.sigma_grid`` is unset (``scheduler`` | ``linspace``); None for a
  sampler with its own sigmas, which then refuses ``method.sigma_grid``.
- ``options``: the sampler-specific ``method.*`` options it reads (:data:`RESTRICTED`); any other sampler
  refuses a non-default value of them. :data:`DRIFT_OPTIONS` are those of the Flow-GRPO / DanceGRPO drift family
  (a noise level g is defined).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from tafs import flow
from tafs.sampling.sde import sample_sde
from tafs.sampling.trajectory import Trajectory, Transition

MethodCfg = Any  # tafs.train.methods.MethodConfig (not imported: the methods module imports this one)
Backbone = Any  # tafs.models.backbone.Backbone
Cond = Any  # tafs.models.backbone.Cond

# the options only some samplers read: any other sampler refuses them at a value other than the default
RESTRICTED = ("cps_logprob", "last_step_noise", "window_wrap", "timestep_fraction", "sigma_grid", "window_rule", "kl",
              "timestep_quant")
DRIFT_OPTIONS = frozenset({"kl", "timestep_quant"})


class Sampler(ABC):
    """How a method samples its trajectories, which actions are trained and what that costs."""

    name: ClassVar[str]
    eval_sampler: ClassVar[str] = "ode"
    num_actions_rule: ClassVar[str] = "method.n_steps - 1"
    default_grid: ClassVar[str | None] = None
    options: ClassVar[frozenset[str]] = frozenset()

    def validate(self, cfg: MethodCfg) -> None:
        """This sampler's own checks of ``cfg`` (ValueError naming the ``method.*`` key); the shared ones ran."""

    @abstractmethod
    def num_actions(self, cfg: MethodCfg) -> int:
        """Actions per trajectory (= the scored one-step estimates x0_hats[:, 1:])."""

    @abstractmethod
    def sigmas(self, cfg: MethodCfg, backbone: Backbone | None = None) -> torch.Tensor:
        """The noise levels the chain visits (``backbone`` for grids that come from the model's scheduler)."""

    def grid(self, cfg: MethodCfg) -> str | None:
        """``method.sigma_grid``, else this sampler's ``default_grid``."""
        return cfg.sigma_grid or self.default_grid

    def stochastic_mask(self, cfg: MethodCfg, iteration: int) -> list[bool]:
        """Which actions are sampled from the policy (the others are deterministic ODE steps)."""
        return [True] * self.num_actions(cfg)

    def trained_mask(self, cfg: MethodCfg, iteration: int) -> list[bool]:
        """Which actions enter the loss for every sample (default: the stochastic ones)."""
        return self.stochastic_mask(cfg, iteration)

    @abstractmethod
    def sample(self, cfg: MethodCfg, backbone: Backbone, cond: Cond, noise: torch.Tensor,
               generator: torch.Generator, iteration: int) -> Trajectory:
        """One batch of trajectories from ``noise`` (every random draw from ``generator``)."""

    @abstractmethod
    def transition(self, cfg: MethodCfg) -> Transition:
        """The stochastic step the loss re-evaluates (log-probs, KL)."""

    @abstractmethod
    def nfe_accounting(self, cfg: MethodCfg) -> dict[str, int]:
        """Table 2: ``nfe_old`` (model calls per sample while sampling) and ``nfe_theta`` (policy forward passes
        per sample while computing ratios = trained actions)."""

    def fraction_trained(self, cfg: MethodCfg) -> tuple[int, str]:
        """With ``timestep_fraction`` in ``options``: the actions it trains and the rule, e.g. ``int(10 x 0.6)``."""
        raise NotImplementedError(f"{self.name} does not read method.timestep_fraction")


class SDESampler(Sampler):
    """A chain of ``n_steps`` model calls from sigma 1 to 0 (:func:`tafs.sampling.sde.sample_sde`): the n_steps - 1
    non-final steps are the actions, the last (to 0) is deterministic unless ``last_step_noise``."""

    options: ClassVar[frozenset[str]] = frozenset({"sigma_grid"})

    def validate(self, cfg: MethodCfg) -> None:
        if cfg.n_steps < 2:
            raise ValueError(f"method.n_steps must be >= 2 for training (the last step is deterministic), "
                             f"got {cfg.n_steps}")
        if not cfg.eta > 0:
            raise ValueError(f"method.eta must be > 0 for a stochastic policy, got {cfg.eta}")

    def num_actions(self, cfg: MethodCfg) -> int:
        return cfg.n_steps - 1

    def sigmas(self, cfg: MethodCfg, backbone: Backbone | None = None) -> torch.Tensor:
        """n_steps + 1 sigmas from 1 to 0: the model's scheduler grid (``backbone`` needed) or
        shift(linspace(1, 0, n_steps + 1))."""
        if self.grid(cfg) == "linspace":
            return flow.ode_sigmas(cfg.n_steps, cfg.shift)
        if backbone is None:
            raise ValueError("method.sigma_grid scheduler: the sigmas come from the backbone's scheduler; pass it")
        sig = backbone.scheduler_sigmas(cfg.n_steps).to(torch.float64)
        if sig.shape != (cfg.n_steps + 1,) or float(sig[0]) > 1.0 or float(sig[-1]) != 0.0:
            raise ValueError(f"the backbone's scheduler_sigmas({cfg.n_steps}) must be {cfg.n_steps + 1} values from at "
                             f"most 1 down to 0, got {sig.tolist()}")
        return sig

    def trained(self, cfg: MethodCfg, iteration: int, rows: int, generator: torch.Generator) -> torch.Tensor:
        """``Trajectory.trained``, decided before any noise is drawn: (T,) for the whole batch, or (rows, T)."""
        return torch.tensor(self.trained_mask(cfg, iteration), dtype=torch.bool)

    def sample(self, cfg: MethodCfg, backbone: Backbone, cond: Cond, noise: torch.Tensor,
               generator: torch.Generator, iteration: int) -> Trajectory:
        trained = self.trained(cfg, iteration, noise.shape[0], generator)
        traj = sample_sde(backbone, cond, noise, self.sigmas(cfg, backbone), self.transition(cfg),
                          self.stochastic_mask(cfg, iteration), generator, last_noise=cfg.last_step_noise,
                          timestep_quant=cfg.timestep_quant)
        traj.trained = trained
        return traj

    def nfe_theta(self, cfg: MethodCfg) -> int:
        """Trained actions per sample (the policy passes of the ratios)."""
        return sum(self.trained_mask(cfg, 0))

    def nfe_accounting(self, cfg: MethodCfg) -> dict[str, int]:
        return {"nfe_old": cfg.n_steps, "nfe_theta": self.nfe_theta(cfg)}
