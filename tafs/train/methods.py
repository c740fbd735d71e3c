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

Options that run a baseline as its authors' code does (all off by default, which is the behaviour above):
- ``cps_logprob: reference`` (cps): log-probs -mean((a - mu)^2) over non-batch dims, no 1 / (2 std^2), no
  normaliser, both recorded while sampling and re-evaluated in the loss (so ratios are exp of their
  difference), and the KL term mean((mu - mu_ref)^2) (IamCreateAI/FlowCPS, yifan123/flow_grpo sde_type
  "cps"). ``gaussian`` (default) keeps log N(a; mu, std^2 I).
- ``last_step_noise`` (flow_sde, mix_sde): the last step (to sigma 0) samples the Flow-GRPO SDE Gaussian
  (std g sqrt(sigma), mean from the same formula with dt = -sigma) instead of the Euler step; the output
  image (the one rewarded) is that noisy sample; the step is not trained (Flow-GRPO trains
  int(0.99 n_steps) = n_steps - 1 steps). MixGRPO's own code never noises its last step.
- ``same_init_noise`` (any sampler): the G samples of a prompt start from the same initial noise
  (DanceGRPO's and MixGRPO's launch scripts pass ``--init_same_noise``).
- ``window_wrap: false`` (mix_sde): the window stops at its last full position instead of restarting at 0.
  (MixGRPO's launch scripts pass ``--roll_back``, i.e. restart at 0; its window start runs 0..n_steps - 2 and
  the window is cut at index n_steps - 3, so its last positions are narrower; ours are always full.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tafs import flow
from tafs.models.backbone import Backbone, Cond
from tafs.sampling.annealed import renoise_transition, sample_annealed
from tafs.sampling.sde import (CPS_LOGPROBS, cps_transition, dance_sde_transition, flow_sde_transition, sample_sde,
                               transition_kl, transition_log_prob)
from tafs.sampling.trajectory import Trajectory, Transition

SAMPLERS = ("annealed", "flow_sde", "dance_sde", "mix_sde", "cps")
SDE_SAMPLERS = ("flow_sde", "dance_sde", "mix_sde", "cps")
LAST_NOISE_SAMPLERS = ("flow_sde", "mix_sde")
FLAGS = ("last_step_noise", "same_init_noise", "window_wrap")


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
    # cps: "gaussian" (log N(a; mu, std^2 I)) | "reference" (the CPS code's -mean((a - mu)^2), no constants,
    # and KL mean((mu - mu_ref)^2)), used while sampling and in the loss alike
    cps_logprob: str = "gaussian"
    # flow_sde / mix_sde: the last step (to sigma 0) samples the SDE Gaussian (std g sqrt(sigma)) like Flow-GRPO's
    # code; the rewarded output image is that noisy sample; the step is never trained
    last_step_noise: bool = False
    same_init_noise: bool = False  # any sampler: the G samples of a prompt share one initial noise (--init_same_noise)
    window_wrap: bool = True  # mix_sde: after the last position the window restarts at 0; false: it stays there

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"method.sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        self._check_reference_options()
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

    def _check_reference_options(self) -> None:
        """The as-the-authors-run-it options: valid values, and set only where they mean something."""
        for key in FLAGS:
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"method.{key} must be true or false, got {getattr(self, key)!r}")
        if self.cps_logprob not in CPS_LOGPROBS:
            raise ValueError(f"method.cps_logprob must be one of {CPS_LOGPROBS}, got {self.cps_logprob!r}")
        if self.cps_logprob != "gaussian" and self.sampler != "cps":
            raise ValueError(f"method.cps_logprob = {self.cps_logprob!r} applies to the cps sampler only, "
                             f"got sampler {self.sampler!r}")
        if self.last_step_noise and self.sampler not in LAST_NOISE_SAMPLERS:
            raise ValueError(f"method.last_step_noise applies to the samplers {LAST_NOISE_SAMPLERS} only (Flow-GRPO's "
                             f"SDE), got sampler {self.sampler!r}")
        if not self.window_wrap and self.sampler != "mix_sde":
            raise ValueError(f"method.window_wrap = false applies to the mix_sde sampler only, got sampler "
                             f"{self.sampler!r}")


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
        """mix_sde: first step of the window. With P = n_steps - 1 - window + 1 full-window positions and
        k = iteration // window_every: k % P (window_wrap), else min(k, P - 1)."""
        positions = self.num_actions - self.cfg.window + 1
        k = iteration // self.cfg.window_every
        return k % positions if self.cfg.window_wrap else min(k, positions - 1)

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
                          generator, last_noise=cfg.last_step_noise)
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
        return cps_transition(self.cfg.eta, self.cfg.cps_logprob)

    def log_prob(self, action: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
        """The policy log-prob (B,) of ``action`` given the transition's (mean, std): what the samplers record."""
        return transition_log_prob(self.transition, action, mean, std)

    def kl(self, mean: torch.Tensor, mean_ref: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
        """The KL term (B,) between the policy's step (mean, std) and the reference's (mean_ref, std)."""
        return transition_kl(self.transition, mean, mean_ref, std)

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
