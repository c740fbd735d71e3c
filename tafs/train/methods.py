"""A method = (sampler, which actions are trained, advantage scheme) (DESIGN §8).

Samplers:
- ``annealed``: the TAFS chain (K = n_annealed re-noise actions, NFE K + 1), every action trained.
- ``flow_sde``: Flow-GRPO, the SDE on an ``n_steps`` Euler schedule (NFE n_steps); every step but the
  last (to sigma 0, deterministic) is stochastic and trained.
- ``dance_sde``: DanceGRPO, the constant-g SDE on every non-final step; a random ``train_fraction`` of
  them is trained each iteration (drawn from the sampling generator).
- ``mix_sde``: MixGRPO, the Flow-GRPO SDE inside a sliding window of ``window`` steps, ODE outside; the
  window starts at 0 and advances by one step every ``window_every`` iterations, wrapping around.
- ``cps``: Coefficients-Preserving Sampling on an ``n_steps`` schedule, every non-final step trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tafs import flow
from tafs.models.backbone import Backbone, Cond
from tafs.sampling.annealed import renoise_transition, sample_annealed
from tafs.sampling.sde import cps_transition, dance_sde_transition, flow_sde_transition, sample_sde
from tafs.sampling.trajectory import Trajectory, Transition

SAMPLERS = ("annealed", "flow_sde", "dance_sde", "mix_sde", "cps")
SDE_SAMPLERS = ("flow_sde", "dance_sde", "mix_sde", "cps")


@dataclass(frozen=True)
class MethodConfig:
    sampler: str = "annealed"
    n_annealed: int = 3  # K: re-noise actions; sampling NFE = K + 1 (annealed)
    shift: float | None = None  # the sampler's time shift; None: the model's own (toy 1, SD3 3, Flux by resolution)
    n_steps: int = 10  # SDE samplers: steps = model calls while sampling; n_steps - 1 actions
    eta: float = 0.7  # SDE samplers: noise level (Flow-GRPO 0.7, DanceGRPO 0.3; CPS in (0, 1])
    train_fraction: float = 0.6  # dance_sde: fraction of the n_steps - 1 actions trained per iteration
    window: int = 4  # mix_sde: SDE (and trained) steps per iteration
    window_every: int = 25  # mix_sde: the window advances by one step every this many iterations

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"method.sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.n_annealed < 1:
            raise ValueError(f"method.n_annealed must be >= 1 for training, got {self.n_annealed}")
        if self.shift is not None and not self.shift > 0:
            raise ValueError(f"method.shift must be > 0, got {self.shift}")
        if self.sampler not in SDE_SAMPLERS:
            return
        if self.n_steps < 2:
            raise ValueError(f"method.n_steps must be >= 2 for training (the last step is deterministic), "
                             f"got {self.n_steps}")
        if not self.eta > 0:
            raise ValueError(f"method.eta must be > 0 for a stochastic policy, got {self.eta}")
        if self.sampler == "cps" and self.eta > 1:
            raise ValueError(f"method.eta must be in (0, 1] for the cps sampler, got {self.eta}")
        if self.sampler == "dance_sde" and not 0 < self.train_fraction <= 1:
            raise ValueError(f"method.train_fraction must be in (0, 1], got {self.train_fraction}")
        if self.sampler == "mix_sde":
            if self.window < 1:
                raise ValueError(f"method.window must be >= 1, got {self.window}")
            if self.window > self.n_steps - 1:
                raise ValueError(f"method.window must be <= n_steps - 1 = {self.n_steps - 1} (the last step is "
                                 f"deterministic), got {self.window}")
            if self.window_every < 1:
                raise ValueError(f"method.window_every must be >= 1, got {self.window_every}")


class Method:
    """Binds a config to its sampler and the transition the loss re-evaluates.

    ``default_shift`` (the model's own) stands in for ``cfg.shift`` when that is None.
    """

    def __init__(self, cfg: MethodConfig, default_shift: float = 1.0):
        from dataclasses import replace

        self.cfg = cfg if cfg.shift is not None else replace(cfg, shift=float(default_shift))

    # -- schedule ------------------------------------------------------------------------------------
    @property
    def num_actions(self) -> int:
        """Actions per trajectory (= scored one-step estimates x0_hats[:, 1:])."""
        return self.cfg.n_annealed if self.cfg.sampler == "annealed" else self.cfg.n_steps - 1

    @property
    def num_scored_steps(self) -> int:
        return self.num_actions

    def sigmas(self) -> torch.Tensor:
        """The sampler's noise levels: K + 1 annealed sigmas, or n_steps + 1 from 1 to 0 for the SDE chains."""
        if self.cfg.sampler == "annealed":
            return flow.annealed_sigmas(self.cfg.n_annealed, self.cfg.shift)
        return flow.ode_sigmas(self.cfg.n_steps, self.cfg.shift)

    def dance_num_trained(self) -> int:
        """round(train_fraction * (n_steps - 1)), half up, at least 1."""
        n = self.num_actions
        return min(n, max(1, int(self.cfg.train_fraction * n + 0.5)))

    def window_start(self, iteration: int) -> int:
        """mix_sde: first step of the window, (iteration // window_every) % (n_steps - 1 - window + 1)."""
        positions = self.num_actions - self.cfg.window + 1
        return (iteration // self.cfg.window_every) % positions

    def stochastic_mask(self, iteration: int) -> list[bool]:
        """Which of the non-final steps are stochastic (SDE samplers)."""
        n = self.num_actions
        if self.cfg.sampler == "mix_sde":
            start = self.window_start(iteration)
            return [start <= j < start + self.cfg.window for j in range(n)]
        return [True] * n

    # -- sampling ------------------------------------------------------------------------------------
    def sample(self, backbone: Backbone, cond: Cond, noise: torch.Tensor, generator: torch.Generator,
               iteration: int) -> Trajectory:
        cfg = self.cfg
        if cfg.sampler == "annealed":
            return sample_annealed(backbone, cond, noise, cfg.n_annealed, generator, cfg.shift)
        trained = None
        if cfg.sampler == "dance_sde":  # drawn before the noise, from the same generator
            pick = torch.randperm(self.num_actions, generator=generator)[: self.dance_num_trained()]
            trained = torch.zeros(self.num_actions, dtype=torch.bool)
            trained[pick] = True
        traj = sample_sde(backbone, cond, noise, self.sigmas(), self.transition, self.stochastic_mask(iteration),
                          generator)
        if trained is not None:
            traj.trained = trained
        return traj

    @property
    def transition(self) -> Transition:
        s = self.cfg.sampler
        if s == "annealed":
            return renoise_transition
        if s in ("flow_sde", "mix_sde"):
            return flow_sde_transition(self.cfg.eta)
        if s == "dance_sde":
            return dance_sde_transition(self.cfg.eta)
        return cps_transition(self.cfg.eta)

    @property
    def natural_eval_sampler(self) -> str:
        """The inference sampler a model trained with this method is naturally evaluated with."""
        return "annealed" if self.cfg.sampler == "annealed" else "ode"

    def nfe_accounting(self) -> dict[str, int]:
        """Table 2: model calls of the old policy while sampling / policy forward passes per sample while
        computing ratios (= trained actions; for dance_sde the number drawn each iteration)."""
        cfg = self.cfg
        if cfg.sampler == "annealed":
            return {"nfe_old": cfg.n_annealed + 1, "nfe_theta": cfg.n_annealed}
        trained = {"flow_sde": self.num_actions, "cps": self.num_actions, "mix_sde": cfg.window,
                   "dance_sde": self.dance_num_trained()}[cfg.sampler]
        return {"nfe_old": cfg.n_steps, "nfe_theta": trained}
