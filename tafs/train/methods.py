"""A method = (sampler, which actions are trained, advantage scheme) (DESIGN §8).

Samplers:
- ``annealed``: the TAFS chain (K = n_annealed re-noise actions, NFE K + 1), every action trained.
- ``flow_sde``: Flow-GRPO, the SDE on an ``n_steps`` Euler schedule (NFE n_steps; by default the model's own
  scheduler grid, see ``sigma_grid``); every step but the last (to sigma 0, deterministic) is stochastic and
  trained.
- ``dance_sde``: DanceGRPO, the constant-g SDE on every non-final step; a random ``train_fraction`` of
  them (default 0.6, rounded half up, one subset for the whole batch) is trained each iteration (drawn from
  the sampling generator), or DanceGRPO's own per-sample draw with ``timestep_fraction``.
- ``mix_sde``: MixGRPO, the Flow-GRPO SDE inside a sliding window of ``window`` steps, ODE outside; the
  window starts at 0 and advances by one step every ``window_every`` iterations, wrapping around.
- ``cps``: Coefficients-Preserving Sampling on an ``n_steps`` schedule, every non-final step trained.

Options that run a baseline as its authors' code does (all off by default, which is the behaviour above,
except ``sigma_grid``, whose default is each reference's own grid):
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
  (MixGRPO's launch scripts pass ``--roll_back``, i.e. restart at 0.) With ``window_rule: mixgrpo`` it is the
  MixGRPO start instead (a restart at 0, or a stop at n_steps - 2).
- ``sigma_grid`` (SDE samplers): ``scheduler`` = the model's own scheduler grid (``Backbone.scheduler_sigmas``,
  what Flow-GRPO's pipeline samples with), ``linspace`` = shift(linspace(1, 0, n_steps + 1)) with ``shift``
  (DanceGRPO's and MixGRPO's ``sd3_time_shift``). Unset: scheduler for flow_sde and cps, linspace for dance_sde
  and mix_sde. ``shift`` only applies to the linspace grid.
- ``timestep_fraction``: flow_sde trains its first int(n_steps * f) steps (Flow-GRPO), dance_sde trains per
  sample a random int((n_steps - 1) * f) of its steps (DanceGRPO; then ``Trajectory.trained`` is (B, T) and
  ``train_fraction`` must stay unset).
- ``timestep_quant`` (flow_sde, dance_sde, mix_sde): the model is fed int(sigma * q) / q (DanceGRPO and MixGRPO
  feed q = 1000), the SDE maths uses the exact sigma; 0 (default) feeds the exact sigma.
- ``window_rule: mixgrpo`` (mix_sde): MixGRPO's window range(start, min(start + window, n_steps - 2)).
- ``kl: flow_grpo`` (flow_sde, mix_sde, dance_sde): Flow-GRPO's KL term mean((mu - mu_ref)^2) / (2 g^2) with the
  noise level g, not the step std g sqrt(-dt) of the Gaussian KL (``gaussian``, default).

Where each option comes from in the authors' code: the table in :mod:`tafs.train.reference`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tafs import flow
from tafs.models.backbone import Backbone, Cond
from tafs.sampling.annealed import renoise_transition, sample_annealed
from tafs.sampling.noise import batch_rand
from tafs.sampling.policy import gaussian_kl_same_std
from tafs.sampling.sde import (
    CPS_LOGPROBS,
    cps_transition,
    dance_sde_transition,
    flow_sde_transition,
    sample_sde,
    transition_kl,
    transition_log_prob,
)
from tafs.sampling.trajectory import Trajectory, Transition
from tafs.train.reference import (
    KL_RULES,
    SIGMA_GRIDS,
    WINDOW_RULES,
    dance_num_trained,
    flow_grpo_kl_std,
    flow_grpo_num_trained,
    full_window_start,
    mixgrpo_window,
    per_sample_subsets,
)

SAMPLERS = ("annealed", "flow_sde", "dance_sde", "mix_sde", "cps")
SDE_SAMPLERS = ("flow_sde", "dance_sde", "mix_sde", "cps")
LAST_NOISE_SAMPLERS = ("flow_sde", "mix_sde")
DRIFT_SAMPLERS = ("flow_sde", "dance_sde", "mix_sde")  # the Flow-GRPO / DanceGRPO drift family (g defined)
FRACTION_SAMPLERS = ("flow_sde", "dance_sde")
DEFAULT_GRID = {"flow_sde": "scheduler", "cps": "scheduler", "dance_sde": "linspace", "mix_sde": "linspace"}
FLAGS = ("last_step_noise", "same_init_noise", "window_wrap")


@dataclass(frozen=True)
class MethodConfig:
    sampler: str = "annealed"
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
        if self.sampler == "dance_sde" and self.train_fraction is not None and not 0 < self.train_fraction <= 1:
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
        self._check_timestep_fraction()
        self._check_choice("sigma_grid", (None, *SIGMA_GRIDS), None, SDE_SAMPLERS)
        self._check_choice("window_rule", WINDOW_RULES, "full", ("mix_sde",))
        self._check_choice("kl", KL_RULES, "gaussian", DRIFT_SAMPLERS)
        if isinstance(self.timestep_quant, bool) or not isinstance(self.timestep_quant, int) or self.timestep_quant < 0:
            raise ValueError(f"method.timestep_quant must be an integer >= 0 (1000: DanceGRPO / MixGRPO; 0: off), "
                             f"got {self.timestep_quant!r}")
        if self.timestep_quant and self.sampler not in DRIFT_SAMPLERS:
            raise ValueError(f"method.timestep_quant applies to the samplers {DRIFT_SAMPLERS} only, got sampler "
                             f"{self.sampler!r}")
        grid = self.sigma_grid or DEFAULT_GRID.get(self.sampler)
        if grid == "scheduler" and self.shift is not None:
            raise ValueError(f"method.shift = {self.shift} applies to method.sigma_grid linspace only: the scheduler "
                             f"grid (the default of {self.sampler!r}) uses the model's own shift")

    def _check_choice(self, key: str, allowed: tuple, default: object, samplers: tuple[str, ...]) -> None:
        """``key`` is one of ``allowed`` and, unless ``default``, set for one of ``samplers`` only."""
        value = getattr(self, key)
        if value not in allowed:
            raise ValueError(f"method.{key} must be one of {allowed}, got {value!r}")
        if value != default and self.sampler not in samplers:
            raise ValueError(f"method.{key} = {value!r} applies to the samplers {samplers} only, got sampler "
                             f"{self.sampler!r}")

    def _check_timestep_fraction(self) -> None:
        """At least one trained step; flow_sde's int(n_steps f) must leave the last step (to sigma 0) out."""
        f = self.timestep_fraction
        if f is None:
            return
        if self.sampler not in FRACTION_SAMPLERS:
            raise ValueError(f"method.timestep_fraction applies to the samplers {FRACTION_SAMPLERS} only, got "
                             f"sampler {self.sampler!r}")
        if self.train_fraction is not None:
            raise ValueError("method.train_fraction and method.timestep_fraction are two rules for the same thing: "
                             "set one")
        if not 0 < f <= 1:
            raise ValueError(f"method.timestep_fraction must be in (0, 1], got {f}")
        n = self.n_steps
        k = flow_grpo_num_trained(n, f) if self.sampler == "flow_sde" else dance_num_trained(n - 1, f)
        top = n - 1
        if not 1 <= k <= top:
            rule = f"int({n} x {f})" if self.sampler == "flow_sde" else f"int({n - 1} x {f})"
            raise ValueError(f"method.timestep_fraction: {rule} = {k} trained steps, must be in 1..{top} (the last "
                             f"step, to sigma 0, is never an action)")


class Method:
    """Binds a config to its sampler and the transition the loss re-evaluates.

    ``default_shift`` (the model's own) stands in for ``cfg.shift`` when that is None, except on the scheduler
    grid, whose shift is the scheduler's (``cfg.shift`` stays None).
    """

    def __init__(self, cfg: MethodConfig, default_shift: float = 1.0):
        from dataclasses import replace

        keep = cfg.shift is not None or (cfg.sigma_grid or DEFAULT_GRID.get(cfg.sampler)) == "scheduler"
        self.cfg = cfg if keep else replace(cfg, shift=float(default_shift))

    # -- schedule ------------------------------------------------------------------------------------
    @property
    def num_actions(self) -> int:
        """Actions per trajectory (= scored one-step estimates x0_hats[:, 1:])."""
        return self.cfg.n_annealed if self.cfg.sampler == "annealed" else self.cfg.n_steps - 1

    @property
    def num_scored_steps(self) -> int:
        return self.num_actions

    @property
    def sigma_grid(self) -> str | None:
        """The SDE samplers' grid (``method.sigma_grid``, else the reference's); None for the annealed chain."""
        return self.cfg.sigma_grid or DEFAULT_GRID.get(self.cfg.sampler)

    def sigmas(self, backbone: Backbone | None = None) -> torch.Tensor:
        """The sampler's noise levels: K + 1 annealed sigmas, or n_steps + 1 from 1 to 0 for the SDE chains, on
        the model's scheduler grid (``backbone`` needed) or shift(linspace(1, 0, n_steps + 1))."""
        cfg = self.cfg
        if cfg.sampler == "annealed":
            return flow.annealed_sigmas(cfg.n_annealed, cfg.shift)
        if self.sigma_grid == "linspace":
            return flow.ode_sigmas(cfg.n_steps, cfg.shift)
        if backbone is None:
            raise ValueError("method.sigma_grid scheduler: the sigmas come from the backbone's scheduler; pass it")
        sig = backbone.scheduler_sigmas(cfg.n_steps).to(torch.float64)
        if sig.shape != (cfg.n_steps + 1,) or float(sig[0]) > 1.0 or float(sig[-1]) != 0.0:
            raise ValueError(f"the backbone's scheduler_sigmas({cfg.n_steps}) must be {cfg.n_steps + 1} values from at "
                             f"most 1 down to 0, got {sig.tolist()}")
        return sig

    def dance_num_trained(self) -> int:
        """Trained actions per sample: int((n_steps - 1) timestep_fraction) (DanceGRPO), or with train_fraction
        round((n_steps - 1) train_fraction), half up, at least 1."""
        n = self.num_actions
        if self.cfg.timestep_fraction is not None:
            return dance_num_trained(n, self.cfg.timestep_fraction)
        frac = 0.6 if self.cfg.train_fraction is None else self.cfg.train_fraction
        return min(n, max(1, int(frac * n + 0.5)))

    def window_start(self, iteration: int) -> int:
        """mix_sde, window_rule full: first step of the window (:func:`tafs.train.reference.full_window_start`)."""
        cfg = self.cfg
        return full_window_start(iteration, cfg.window_every, self.num_actions, cfg.window, cfg.window_wrap)

    def window_steps(self, iteration: int) -> list[int]:
        """mix_sde: the window's steps at ``iteration`` (window_rule full or MixGRPO's, possibly empty)."""
        cfg = self.cfg
        if cfg.window_rule == "mixgrpo":
            return mixgrpo_window(iteration, cfg.window_every, cfg.n_steps, cfg.window, cfg.window_wrap)
        start = self.window_start(iteration)
        return list(range(start, start + cfg.window))

    def stochastic_mask(self, iteration: int) -> list[bool]:
        """Which of the non-final steps are stochastic (SDE samplers)."""
        n = self.num_actions
        if self.cfg.sampler == "mix_sde":
            steps = set(self.window_steps(iteration))
            return [j in steps for j in range(n)]
        return [True] * n

    def trained_mask(self, iteration: int) -> list[bool]:
        """The actions trained for every sample (SDE samplers other than dance_sde): the stochastic ones, or
        flow_sde's first int(n_steps timestep_fraction) (Flow-GRPO trains steps 0 .. k - 1 in order)."""
        mask = self.stochastic_mask(iteration)
        if self.cfg.sampler == "flow_sde" and self.cfg.timestep_fraction is not None:
            k = flow_grpo_num_trained(self.cfg.n_steps, self.cfg.timestep_fraction)
            return [j < k for j in range(len(mask))]
        return mask

    # -- sampling ------------------------------------------------------------------------------------
    def sample(self, backbone: Backbone, cond: Cond, noise: torch.Tensor, generator: torch.Generator,
               iteration: int) -> Trajectory:
        cfg = self.cfg
        if cfg.sampler == "annealed":
            return sample_annealed(backbone, cond, noise, cfg.n_annealed, generator, cfg.shift)
        trained = torch.tensor(self.trained_mask(iteration), dtype=torch.bool)
        if cfg.sampler == "dance_sde":  # drawn before the noise, from the same generator
            trained = self._dance_subsets(noise.shape[0], generator)
        traj = sample_sde(backbone, cond, noise, self.sigmas(backbone), self.transition, self.stochastic_mask(iteration),
                          generator, last_noise=cfg.last_step_noise, timestep_quant=cfg.timestep_quant)
        traj.trained = trained
        return traj

    def _dance_subsets(self, rows: int, generator: torch.Generator) -> torch.Tensor:
        """(T,) one subset for the batch (train_fraction), or (rows, T) one per sample (timestep_fraction, drawn
        for the global batch inside ``tafs.sampling.noise.sharded`` so a sample's subset ignores the sharding)."""
        n, k = self.num_actions, self.dance_num_trained()
        if self.cfg.timestep_fraction is not None:
            return per_sample_subsets(batch_rand((rows, n), generator, generator.device).cpu(), k)
        trained = torch.zeros(n, dtype=torch.bool)
        trained[torch.randperm(n, generator=generator)[:k]] = True
        return trained

    @property
    def transition(self) -> Transition:
        s, q = self.cfg.sampler, self.cfg.timestep_quant
        if s == "annealed":
            return renoise_transition
        if s in ("flow_sde", "mix_sde"):
            return flow_sde_transition(self.cfg.eta, q)
        if s == "dance_sde":
            return dance_sde_transition(self.cfg.eta, q)
        return cps_transition(self.cfg.eta, self.cfg.cps_logprob)

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
        cfg = self.cfg
        if cfg.sampler == "annealed":
            return {"nfe_old": cfg.n_annealed + 1, "nfe_theta": cfg.n_annealed}
        trained = {"flow_sde": sum(self.trained_mask(0)), "cps": self.num_actions, "mix_sde": cfg.window,
                   "dance_sde": self.dance_num_trained()}[cfg.sampler]
        return {"nfe_old": cfg.n_steps, "nfe_theta": trained}
