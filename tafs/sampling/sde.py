"""Stochastic samplers of the baselines (DESIGN §8): Flow-GRPO SDE, Dance SDE, CPS, and a generic chain.

Every transition is a Gaussian step s -> s' (s' < s) with the signature of
:class:`tafs.sampling.trajectory.Transition`: ``(backbone, x, sigma, sigma_next, cond) -> (mean, std (B,),
x0_hat)``. One model call per step: the clean estimate comes from ``backbone.predict_x0`` (models that
predict x0 override it) and the velocity from ``backbone.velocity``; whichever of the two the model does
not compute natively is derived from the other through x0_hat = x - s v (DESIGN §3), so a step costs one
forward pass (see :func:`velocity_and_x0`).

- Flow-GRPO SDE (dt = s' - s < 0): g = eta sqrt(s / (1 - s)),
  mean = x + v dt + g^2 / (2 s) (x + (1 - s) v) dt, std = g sqrt(-dt). At s = 1 the denominator
  1 - s is replaced by 1 - s' (s' the next sigma), as in the public Flow-GRPO code
  (``torch.where(sigma == 1, sigma_max, sigma)`` in the denominator only; sigma_max = sigmas[1]).
- Dance SDE: the same drift family with a constant g = eta.
- CPS (Coefficients-Preserving Sampling): eps_hat = (x - (1 - s) x0_hat) / s,
  mean = (1 - s') x0_hat + s' cos(eta pi / 2) eps_hat, std = s' sin(eta pi / 2). eta = 1 is exactly the
  TAFS re-noise transition (DESIGN §5), which :func:`tafs.sampling.annealed.renoise_transition` reuses.
  With ``logprob="reference"`` (``method.cps_logprob``) its log-prob is the CPS reference code's
  -mean((a - mean)^2) (no 1 / (2 std^2), no normaliser; IamCreateAI/FlowCPS and yifan123/flow_grpo,
  flow_grpo/diffusers_patch/sd3_sde_with_logprob.py) and its KL term mean((mu - mu_ref)^2) (FlowCPS
  scripts/train_sd3.py), both in sampling and in the loss: :func:`transition_log_prob` and
  :func:`transition_kl` are the one place either is computed.

:func:`sample_sde` with ``last_noise`` (``method.last_step_noise``) also samples the last step (to sigma 0)
from the transition's Gaussian, as Flow-GRPO's reference pipeline does (sigma' = 0, dt = -s,
std = g sqrt(s)); that step is never an action (Flow-GRPO trains int(0.99 n_steps) = n_steps - 1 steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from tafs import flow
from tafs.models.backbone import Backbone, Cond
from tafs.sampling.noise import batch_randn
from tafs.sampling.policy import gaussian_kl_same_std, gaussian_log_prob, squared_error_kl, squared_error_log_prob
from tafs.sampling.trajectory import Trajectory, Transition
from tafs.train.reference import model_sigma


def _sigma_batch(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.full((x.shape[0],), sigma, device=x.device, dtype=x.dtype)


def velocity_and_x0(backbone: Backbone, x: torch.Tensor, sigma: float, cond: Cond,
                    timestep_quant: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(v_hat, x0_hat) at (x, sigma) with ONE model call.

    A backbone that keeps the default ``predict_x0`` (x - s v) is asked for its velocity and x0_hat is
    computed exactly as ``predict_x0`` would; one that overrides ``predict_x0`` (x0-predicting models) is
    asked for x0_hat and v = (x - x0_hat) / s, which is what its ``velocity`` returns. Needs sigma > 0.
    With ``timestep_quant`` (``method.timestep_quant``) the model is fed the quantised level
    (:func:`tafs.train.reference.model_sigma`, DanceGRPO / MixGRPO) and x0_hat = x - sigma v uses the exact
    sigma, as their ``flux_step`` does.
    """
    if timestep_quant:
        return _quantised_velocity_and_x0(backbone, x, sigma, cond, timestep_quant)
    sig = _sigma_batch(x, sigma)
    if type(backbone).predict_x0 is Backbone.predict_x0:
        v = backbone.velocity(x, sig, cond)
        return v, flow.x0_from_velocity(x, v, sig)
    x0_hat = backbone.predict_x0(x, sig, cond)
    return (x - x0_hat) / sigma, x0_hat


def _quantised_velocity_and_x0(backbone: Backbone, x: torch.Tensor, sigma: float, cond: Cond,
                               quant: int) -> tuple[torch.Tensor, torch.Tensor]:
    """v from one call at the quantised level q, x0_hat = x - sigma v at the exact one."""
    q = model_sigma(sigma, quant)
    sig_q = _sigma_batch(x, q)
    if type(backbone).predict_x0 is Backbone.predict_x0:
        v = backbone.velocity(x, sig_q, cond)
    elif q > 0:
        v = (x - backbone.predict_x0(x, sig_q, cond)) / q
    else:
        raise ValueError(f"sigma {sigma} quantises to 0: an x0-predicting model gives no velocity there")
    return v, flow.x0_from_velocity(x, v, _sigma_batch(x, sigma))


# -- the drift family of Flow-GRPO and DanceGRPO ----------------------------------------------------

def flow_grpo_g(eta: float, sigma: float, sigma_next: float) -> float:
    """Flow-GRPO diffusion coefficient eta sqrt(s / (1 - s)); at s = 1 the denominator uses s'."""
    denom = 1.0 - (sigma_next if sigma >= 1.0 else sigma)
    return eta * math.sqrt(sigma / denom)


def _sde_gaussian(backbone: Backbone, x: torch.Tensor, sigma: float, sigma_next: float, cond: Cond,
                  g: float, timestep_quant: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mean = x + v dt + g^2 / (2 s) (x + (1 - s) v) dt, std = g sqrt(-dt); mean in fp32 (bf16 overflows).
    The model may see a quantised sigma (``timestep_quant``); the formulas use the exact one."""
    if not sigma_next < sigma:
        raise ValueError(f"an SDE step needs sigma_next < sigma, got {sigma} -> {sigma_next}")
    v, x0_hat = velocity_and_x0(backbone, x, sigma, cond, timestep_quant)
    xf, vf = x.float(), v.float()
    dt = sigma_next - sigma
    mean = xf + vf * dt + (g * g / (2 * sigma)) * (xf + (1 - sigma) * vf) * dt
    std = torch.full((x.shape[0],), g * math.sqrt(-dt), device=x.device, dtype=torch.float32)
    return mean, std, x0_hat


@dataclass(frozen=True)
class FlowSDETransition:
    """The Flow-GRPO SDE step with noise level ``eta`` (the model fed sigma quantised by ``timestep_quant``,
    0: exact; MixGRPO's code feeds int(1000 sigma) / 1000)."""

    eta: float
    timestep_quant: int = 0

    def __call__(self, backbone: Backbone, x: torch.Tensor, sigma: float, sigma_next: float,
                 cond: Cond) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return _sde_gaussian(backbone, x, sigma, sigma_next, cond, flow_grpo_g(self.eta, sigma, sigma_next),
                             self.timestep_quant)


@dataclass(frozen=True)
class DanceSDETransition:
    """The DanceGRPO SDE step: the Flow-GRPO drift family with a constant g = ``eta`` (``timestep_quant``: as
    :class:`FlowSDETransition`; DanceGRPO's code feeds int(1000 sigma) / 1000)."""

    eta: float
    timestep_quant: int = 0

    def __call__(self, backbone: Backbone, x: torch.Tensor, sigma: float, sigma_next: float,
                 cond: Cond) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return _sde_gaussian(backbone, x, sigma, sigma_next, cond, self.eta, self.timestep_quant)


# -- Coefficients-Preserving Sampling (and the TAFS re-noise step, its eta = 1 case) ------------------

def cps_coefficients(eta: float) -> tuple[float, float]:
    """(cos(eta pi / 2), sin(eta pi / 2)), exact at eta = 0 and eta = 1 (cos(pi / 2) is not 0 in floats)."""
    if eta == 1:
        return 0.0, 1.0
    if eta == 0:
        return 1.0, 0.0
    return math.cos(eta * math.pi / 2), math.sin(eta * math.pi / 2)


def cps_gaussian(backbone: Backbone, x: torch.Tensor, sigma: float, sigma_next: float, cond: Cond,
                 cos_coef: float, sin_coef: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mean = (1 - s') x0_hat + s' cos_coef eps_hat, std = s' sin_coef (B,) fp32, and x0_hat.

    The eps_hat term is skipped when cos_coef == 0 (eta = 1), so that case is bit-for-bit the TAFS
    re-noise transition (and never divides by sigma).
    """
    x0_hat = backbone.predict_x0(x, _sigma_batch(x, sigma), cond)
    mean = (1 - sigma_next) * x0_hat
    if cos_coef != 0.0:
        eps_hat = (x - (1 - sigma) * x0_hat) / sigma
        mean = mean + (sigma_next * cos_coef) * eps_hat
    std = torch.full((x.shape[0],), sigma_next * sin_coef, device=x.device, dtype=torch.float32)
    return mean, std, x0_hat


CPS_LOGPROBS = ("gaussian", "reference")


@dataclass(frozen=True)
class CPSTransition:
    """Coefficients-Preserving Sampling with noise level ``eta`` in [0, 1] (eta = 1: TAFS re-noising).

    ``logprob``: "gaussian" (log N(a; mean, std^2 I) averaged over dims, like every other transition) or
    "reference" (the CPS code's -mean((a - mean)^2), and its KL mean((mu - mu_ref)^2)).
    """

    eta: float
    logprob: str = "gaussian"

    def __post_init__(self) -> None:
        if self.logprob not in CPS_LOGPROBS:
            raise ValueError(f"CPS log-prob must be one of {CPS_LOGPROBS}, got {self.logprob!r}")

    def __call__(self, backbone: Backbone, x: torch.Tensor, sigma: float, sigma_next: float,
                 cond: Cond) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c, s = cps_coefficients(self.eta)
        return cps_gaussian(backbone, x, sigma, sigma_next, cond, c, s)

    def log_prob(self, action: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
        if self.logprob == "reference":
            return squared_error_log_prob(action, mean)
        return gaussian_log_prob(action, mean, std)

    def kl(self, mean: torch.Tensor, mean_ref: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
        if self.logprob == "reference":
            return squared_error_kl(mean, mean_ref)
        return gaussian_kl_same_std(mean, mean_ref, std)


def flow_sde_transition(eta: float, timestep_quant: int = 0) -> Transition:
    return FlowSDETransition(float(eta), int(timestep_quant))


def dance_sde_transition(eta: float, timestep_quant: int = 0) -> Transition:
    return DanceSDETransition(float(eta), int(timestep_quant))


def cps_transition(eta: float, logprob: str = "gaussian") -> Transition:
    return CPSTransition(float(eta), logprob)


def transition_log_prob(transition: Transition, action: torch.Tensor, mean: torch.Tensor,
                        std: torch.Tensor | float) -> torch.Tensor:
    """The log-prob (B,) of ``action`` under ``transition``'s (mean, std): its own ``log_prob`` when it has
    one (CPS), else the Gaussian. The samplers record it and the loss re-evaluates it through this function."""
    own = getattr(transition, "log_prob", None)
    return own(action, mean, std) if own is not None else gaussian_log_prob(action, mean, std)


def transition_kl(transition: Transition, mean: torch.Tensor, mean_ref: torch.Tensor,
                  std: torch.Tensor | float) -> torch.Tensor:
    """The KL term (B,) between the policy's and the reference's step: the transition's own ``kl`` when it
    has one (CPS), else the equal-std Gaussian KL."""
    own = getattr(transition, "kl", None)
    return own(mean, mean_ref, std) if own is not None else gaussian_kl_same_std(mean, mean_ref, std)


# -- the generic chain ----------------------------------------------------------------------------------

def _randn(shape: torch.Size, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device, moved to ``like``'s device."""
    dev = generator.device if generator is not None else like.device
    return batch_randn(shape, generator, dev, like.dtype).to(like.device)


def _check_chain(sig: list[float], stochastic: Sequence[bool]) -> list[bool]:
    """Validates the schedule; returns the stochastic mask of the N - 1 non-final steps."""
    n = len(sig) - 1
    if n < 1:
        raise ValueError(f"need at least 2 sigmas (1 model call), got {sig}")
    if sig[-1] != 0.0:
        raise ValueError(f"the sigma schedule must end at 0, got {sig[-1]}")
    if any(not b < a for a, b in zip(sig[:-1], sig[1:])) or sig[0] > 1.0:
        raise ValueError(f"sigmas must decrease strictly from at most 1, got {sig}")
    mask = [bool(m) for m in stochastic]
    if len(mask) == n:
        if mask[-1]:
            raise ValueError("the last step (to sigma 0) is never an action; stochastic[-1] must be False "
                             "(its noise is sample_sde's last_noise)")
        mask = mask[:-1]
    if len(mask) != n - 1:
        raise ValueError(f"stochastic needs {n - 1} entries (one per non-final step), got {len(mask)}")
    return mask


def _gaussian_step(backbone: Backbone, x: torch.Tensor, s: float, s_next: float, cond: Cond,
                   transition: Transition, generator: torch.Generator | None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One draw a ~ transition(x): (a, its log-prob (B,), x0_hat)."""
    mean, std, x0_hat = transition(backbone, x, s, s_next, cond)
    eps = _randn(x.shape, generator, x)
    a = (mean + std.reshape(-1, *([1] * (x.ndim - 1))).to(mean.dtype) * eps).to(x.dtype)
    return a, transition_log_prob(transition, a, mean, std), x0_hat


@torch.no_grad()
def sample_sde(backbone: Backbone, cond: Cond, noise: torch.Tensor, sigmas: Sequence[float] | torch.Tensor,
               transition: Transition, stochastic: Sequence[bool], generator: torch.Generator | None = None,
               last_noise: bool = False, timestep_quant: int = 0) -> Trajectory:
    """A chain over ``sigmas`` (decreasing, ending at 0) with N = len(sigmas) - 1 model calls.

    Step j (sigmas[j] -> sigmas[j+1]) samples from ``transition`` when ``stochastic[j]``, else it is the
    Euler ODE step x + (s' - s) v (no noise, log-prob 0, never trained). The last step (to 0) is never an
    action: by default it is the deterministic Euler step, which equals the one-step estimate, so
    ``final == x0_hats[:, -1]`` is the last model call's clean estimate. With ``last_noise`` it samples the
    transition's Gaussian at sigma' = 0 instead (Flow-GRPO's reference; one more noise draw), ``final`` is
    that noisy sample and ``x0_hats[:, -1]`` is set to it, so the last scored estimate is the output image
    (``final == x0_hats[:, -1]`` holds in both modes; the last call's clean estimate is not kept).
    ``stochastic`` has N - 1 entries (or N with a False last entry). The trajectory's actions are the
    N - 1 non-final steps, ``trained`` = the stochastic mask, ``action_step[j] = j + 1``, ``nfe = N``.
    ``timestep_quant``: the model is fed quantised sigmas on the ODE steps and the last step too (the
    stochastic ones quantise through their transition, built with the same value).
    """
    sig = [float(s) for s in (sigmas.tolist() if isinstance(sigmas, torch.Tensor) else sigmas)]
    mask, n = _check_chain(sig, stochastic), len(sig) - 1
    x = noise
    states, actions, logps, x0s = [], [], [], []
    for j in range(n - 1):
        s, s_next = sig[j], sig[j + 1]
        if mask[j]:
            a, logp, x0_hat = _gaussian_step(backbone, x, s, s_next, cond, transition, generator)
        else:
            v, x0_hat = velocity_and_x0(backbone, x, s, cond, timestep_quant)
            a = flow.euler_step(x, v, s, s_next)
            logp = torch.zeros(x.shape[0], device=x.device, dtype=torch.float32)
        states.append(x), actions.append(a), logps.append(logp), x0s.append(x0_hat)
        x = a
    if last_noise:  # the output image is the SDE sample at sigma 0
        x0s.append(_gaussian_step(backbone, x, sig[n - 1], 0.0, cond, transition, generator)[0])
    elif timestep_quant:  # Euler to 0 with the model at the quantised sigma
        x0s.append(velocity_and_x0(backbone, x, sig[n - 1], cond, timestep_quant)[1])
    else:  # Euler to 0: x - s v = x0_hat
        x0s.append(backbone.predict_x0(x, _sigma_batch(x, sig[n - 1]), cond))

    b, k = noise.shape[0], len(actions)
    empty = noise.new_zeros((b, 0, *noise.shape[1:]))
    return Trajectory(
        states=torch.stack(states, 1) if k else empty,
        actions=torch.stack(actions, 1) if k else empty,
        log_probs=torch.stack(logps, 1) if k else noise.new_zeros((b, 0), dtype=torch.float32),
        sigmas=torch.tensor(sig[:n - 1]), sigmas_next=torch.tensor(sig[1:n]),
        x0_hats=torch.stack(x0s, 1), final=x0s[-1], trained=torch.tensor(mask, dtype=torch.bool),
        nfe=n, action_step=torch.arange(1, k + 1))
