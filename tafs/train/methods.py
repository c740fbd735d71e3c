"""A method = (sampler, which actions are trained, advantage scheme) (DESIGN §8).

The samplers live in :mod:`tafs.train.samplers`, one module each (``annealed``: the TAFS chain; ``flow_sde``:
Flow-GRPO; ``dance_sde``: DanceGRPO; ``mix_sde``: MixGRPO; ``cps``: Coefficients-Preserving Sampling), registered
by ``method.sampler`` name; each module documents the options that are its own. :class:`MethodConfig` holds every
``method.*`` option and checks the shared ones, :class:`Method` binds a config to its sampler.

Options that run a baseline as its authors' code does are all off by default, except ``sigma_grid``, whose
default is each reference's own grid (where each comes from: the table in :mod:`tafs.train.reference`). Those
every SDE sampler or every sampler reads:

- ``same_init_noise`` (any sampler): the G samples of a prompt start from the same initial noise (DanceGRPO's and
  MixGRPO's launch scripts pass ``--init_same_noise``).
- ``sigma_grid`` (SDE samplers): ``scheduler`` = the model's own scheduler grid (``Backbone.scheduler_sigmas``,
  what Flow-GRPO's pipeline samples with), ``linspace`` = shift(linspace(1, 0, n_steps + 1)) with ``shift``
  (DanceGRPO's and MixGRPO's ``sd3_time_shift``). Unset: the sampler's ``default_grid`` (scheduler for flow_sde
  and cps, linspace for dance_sde and mix_sde). ``shift`` only applies to the linspace grid.
- ``kl: flow_grpo`` and ``timestep_quant`` (the drift family: flow_sde, dance_sde, mix_sde): Flow-GRPO's KL term
  mean((mu - mu_ref)^2) / (2 g^2) with the noise level g; the model fed int(sigma q) / q (DanceGRPO and MixGRPO
  feed q = 1000; 0, the default, feeds the exact sigma), the SDE maths on the exact sigma.

A sampler-specific option (``cps_logprob``, ``last_step_noise``, ``timestep_fraction``, ``window_wrap``,
``window_rule``, ...) set on a sampler that does not read it (``Sampler.options``) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from tafs.models.backbone import Backbone, Cond
from tafs.sampling.policy import gaussian_kl_same_std
from tafs.sampling.sde import CPS_LOGPROBS, transition_kl, transition_log_prob
from tafs.sampling.trajectory import Trajectory, Transition
from tafs.train.reference import KL_RULES, SIGMA_GRIDS, WINDOW_RULES, flow_grpo_kl_std
from tafs.train.samplers import SAMPLERS as REGISTRY
from tafs.train.samplers import Sampler, dance_sde, get_sampler, mix_sde, reading
from tafs.train.samplers.base import DRIFT_OPTIONS

FLAGS = ("last_step_noise", "same_init_noise", "window_wrap")


def __getattr__(name: str) -> object:
    """The sampler groups by their former names, read from the registry when asked (so they include samplers
    registered later)."""
    groups = {
        "SAMPLERS": lambda: tuple(REGISTRY),
        "SDE_SAMPLERS": lambda: reading("sigma_grid"),
        "LAST_NOISE_SAMPLERS": lambda: reading("last_step_noise"),
        "DRIFT_SAMPLERS": lambda: tuple(n for n, c in REGISTRY.items() if DRIFT_OPTIONS <= c.options),
        "FRACTION_SAMPLERS": lambda: reading("timestep_fraction"),
        "DEFAULT_GRID": lambda: {n: c.default_grid for n, c in REGISTRY.items() if c.default_grid is not None},
    }
    if name in groups:
        return groups[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _only(names: tuple[str, ...]) -> str:
    return f"the {names[0]} sampler only" if len(names) == 1 else f"the samplers {names} only"


@dataclass(frozen=True)
class MethodConfig:
    sampler: str = "annealed"  # a name of tafs.train.samplers.SAMPLERS
    n_annealed: int = 3  # K: re-noise actions; sampling NFE = K + 1 (annealed)
    shift: float | None = None  # the sampler's time shift; None: the model's own (toy 1, SD3 3, Flux by resolution)
    n_steps: int = 10  # SDE samplers: steps = model calls while sampling; n_steps - 1 actions
    eta: float = 0.7  # SDE samplers: noise level (Flow-GRPO 0.7, DanceGRPO 0.3; CPS in (0, 1])
    # dance_sde: fraction of the n_steps - 1 actions trained per iteration, one subset shared by the batch,
    # rounded half up (None: 0.6); leave unset with timestep_fraction
    train_fraction: float | None = None
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
    sigma_grid: str | None = None  # SDE samplers: scheduler | linspace; None: scheduler (flow_sde, cps), linspace
    # flow_sde: train steps 0 .. int(n_steps f) - 1; dance_sde: per sample int((n_steps - 1) f) random steps
    timestep_fraction: float | None = None
    timestep_quant: int = 0  # flow_sde, dance_sde, mix_sde: the model sees int(sigma q) / q (0: the exact sigma)
    window_rule: str = "full"  # mix_sde: full (full-width positions) | mixgrpo (MixGRPO's shrinking window)
    kl: str = "gaussian"  # gaussian | flow_grpo (flow_sde, mix_sde, dance_sde: / (2 g^2) instead of / (2 std^2))

    def __post_init__(self) -> None:
        sampler = get_sampler(self.sampler)()
        self._check_reference_options(sampler)
        if self.n_annealed < 1:
            raise ValueError(f"method.n_annealed must be >= 1 for training, got {self.n_annealed}")
        if self.shift is not None and not self.shift > 0:
            raise ValueError(f"method.shift must be > 0, got {self.shift}")
        sampler.validate(self)

    def _check_reference_options(self, sampler: Sampler) -> None:
        """The as-the-authors-run-it options: valid values, and set only where they mean something."""
        for key in FLAGS:
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"method.{key} must be true or false, got {getattr(self, key)!r}")
        if self.cps_logprob not in CPS_LOGPROBS:
            raise ValueError(f"method.cps_logprob must be one of {CPS_LOGPROBS}, got {self.cps_logprob!r}")
        if self.cps_logprob != "gaussian" and "cps_logprob" not in sampler.options:
            raise ValueError(f"method.cps_logprob = {self.cps_logprob!r} applies to {_only(reading('cps_logprob'))}, "
                             f"got sampler {self.sampler!r}")
        if self.last_step_noise and "last_step_noise" not in sampler.options:
            raise ValueError(f"method.last_step_noise applies to the samplers {reading('last_step_noise')} only "
                             f"(Flow-GRPO's SDE), got sampler {self.sampler!r}")
        if not self.window_wrap and "window_wrap" not in sampler.options:
            raise ValueError(f"method.window_wrap = false applies to {_only(reading('window_wrap'))}, got sampler "
                             f"{self.sampler!r}")
        self._check_timestep_fraction(sampler)
        self._check_choice(sampler, "sigma_grid", (None, *SIGMA_GRIDS))
        self._check_choice(sampler, "window_rule", WINDOW_RULES)
        self._check_choice(sampler, "kl", KL_RULES)
        if isinstance(self.timestep_quant, bool) or not isinstance(self.timestep_quant, int) or self.timestep_quant < 0:
            raise ValueError(f"method.timestep_quant must be an integer >= 0 (1000: DanceGRPO / MixGRPO; 0: off), "
                             f"got {self.timestep_quant!r}")
        if self.timestep_quant and "timestep_quant" not in sampler.options:
            raise ValueError(f"method.timestep_quant applies to the samplers {reading('timestep_quant')} only, got "
                             f"sampler {self.sampler!r}")
        if sampler.grid(self) == "scheduler" and self.shift is not None:
            raise ValueError(f"method.shift = {self.shift} applies to method.sigma_grid linspace only: the scheduler "
                             f"grid (the default of {self.sampler!r}) uses the model's own shift")

    def _check_choice(self, sampler: Sampler, key: str, allowed: tuple) -> None:
        """``key`` is one of ``allowed`` and, unless at its default, set for a sampler that reads it only."""
        value = getattr(self, key)
        if value not in allowed:
            raise ValueError(f"method.{key} must be one of {allowed}, got {value!r}")
        if value != getattr(MethodConfig, key) and key not in sampler.options:
            raise ValueError(f"method.{key} = {value!r} applies to the samplers {reading(key)} only, got sampler "
                             f"{self.sampler!r}")

    def _check_timestep_fraction(self, sampler: Sampler) -> None:
        """At least one trained step, and never the last step (to sigma 0): ``Sampler.fraction_trained``."""
        f = self.timestep_fraction
        if f is None:
            return
        if "timestep_fraction" not in sampler.options:
            raise ValueError(f"method.timestep_fraction applies to the samplers {reading('timestep_fraction')} only, "
                             f"got sampler {self.sampler!r}")
        if self.train_fraction is not None:
            raise ValueError("method.train_fraction and method.timestep_fraction are two rules for the same thing: "
                             "set one")
        if not 0 < f <= 1:
            raise ValueError(f"method.timestep_fraction must be in (0, 1], got {f}")
        k, rule = sampler.fraction_trained(self)
        top = self.n_steps - 1
        if not 1 <= k <= top:
            raise ValueError(f"method.timestep_fraction: {rule} = {k} trained steps, must be in 1..{top} (the last "
                             f"step, to sigma 0, is never an action)")


class Method:
    """Binds a config to its sampler (``self.sampler``, a :class:`tafs.train.samplers.base.Sampler`) and the
    transition the loss re-evaluates.

    ``default_shift`` (the model's own) stands in for ``cfg.shift`` when that is None, except on the scheduler
    grid, whose shift is the scheduler's (``cfg.shift`` stays None).
    """

    def __init__(self, cfg: MethodConfig, default_shift: float = 1.0):
        self.sampler = get_sampler(cfg.sampler)()
        keep = cfg.shift is not None or self.sampler.grid(cfg) == "scheduler"
        self.cfg = cfg if keep else replace(cfg, shift=float(default_shift))

    # -- schedule ------------------------------------------------------------------------------------
    @property
    def num_actions(self) -> int:
        """Actions per trajectory (= scored one-step estimates x0_hats[:, 1:])."""
        return self.sampler.num_actions(self.cfg)

    @property
    def num_scored_steps(self) -> int:
        return self.num_actions

    @property
    def sigma_grid(self) -> str | None:
        """The SDE samplers' grid (``method.sigma_grid``, else the reference's); None for the annealed chain."""
        return self.sampler.grid(self.cfg)

    def sigmas(self, backbone: Backbone | None = None) -> torch.Tensor:
        """The sampler's noise levels: K + 1 annealed sigmas, or n_steps + 1 from 1 to 0 for the SDE chains, on
        the model's scheduler grid (``backbone`` needed) or shift(linspace(1, 0, n_steps + 1))."""
        return self.sampler.sigmas(self.cfg, backbone)

    def dance_num_trained(self) -> int:
        """dance_sde: trained actions per sample (:func:`tafs.train.samplers.dance_sde.num_trained`)."""
        return dance_sde.num_trained(self.cfg)

    def window_start(self, iteration: int) -> int:
        """mix_sde, window_rule full: first step of the window (:func:`tafs.train.reference.full_window_start`)."""
        return mix_sde.window_start(self.cfg, iteration)

    def window_steps(self, iteration: int) -> list[int]:
        """mix_sde: the window's steps at ``iteration`` (window_rule full or MixGRPO's, possibly empty)."""
        return mix_sde.window_steps(self.cfg, iteration)

    def stochastic_mask(self, iteration: int) -> list[bool]:
        """Which of the non-final steps are stochastic."""
        return self.sampler.stochastic_mask(self.cfg, iteration)

    def trained_mask(self, iteration: int) -> list[bool]:
        """The actions trained for every sample (all samplers but dance_sde, which draws them while sampling)."""
        return self.sampler.trained_mask(self.cfg, iteration)

    # -- sampling ------------------------------------------------------------------------------------
    def sample(self, backbone: Backbone, cond: Cond, noise: torch.Tensor, generator: torch.Generator,
               iteration: int) -> Trajectory:
        return self.sampler.sample(self.cfg, backbone, cond, noise, generator, iteration)

    @property
    def transition(self) -> Transition:
        return self.sampler.transition(self.cfg)

    def log_prob(self, action: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
        """The policy log-prob (B,) of ``action`` given the transition's (mean, std): what the samplers record."""
        return transition_log_prob(self.transition, action, mean, std)

    def kl(self, mean: torch.Tensor, mean_ref: torch.Tensor, std: torch.Tensor | float, sigma: float | None = None,
           sigma_next: float | None = None) -> torch.Tensor:
        """The KL term (B,) between the policy's step (mean, std) and the reference's (mean_ref, std); with
        ``kl: flow_grpo`` Flow-GRPO's mean((mu - mu_ref)^2) / (2 g^2), g = std / sqrt(sigma - sigma_next)
        (scripts/train_sd3.py:895), which needs the step's sigmas."""
        if self.cfg.kl == "flow_grpo":
            if sigma is None or sigma_next is None:
                raise ValueError("method.kl flow_grpo needs the step's sigma and sigma_next")
            return gaussian_kl_same_std(mean, mean_ref, flow_grpo_kl_std(std, sigma, sigma_next))
        return transition_kl(self.transition, mean, mean_ref, std)

    def nfe_accounting(self) -> dict[str, int]:
        """Table 2: model calls of the old policy while sampling / policy forward passes per sample while
        computing ratios (= trained actions; for dance_sde the number drawn each iteration; for mix_sde the
        window, whose last MixGRPO positions are narrower)."""
        return self.sampler.nfe_accounting(self.cfg)
