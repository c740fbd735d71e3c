"""TAFS temperature-annealed few-step chain (DESIGN §4), with log-probs (DESIGN §5).

for n = 1..K+1: x0_hat^n = x_{sigma_n} - sigma_n v(x_{sigma_n}); for n <= K the action re-noises
x0_hat^n to sigma_{n+1}: a ~ N((1 - sigma_{n+1}) x0_hat^n, sigma_{n+1}^2 I). The output is x0_hat^{K+1}.
"""

from __future__ import annotations

import torch

from tafs import flow
from tafs.models.backbone import Backbone, Cond
from tafs.sampling.noise import batch_randn
from tafs.sampling.policy import gaussian_log_prob
from tafs.sampling.sde import cps_coefficients, cps_gaussian
from tafs.sampling.trajectory import Trajectory


def renoise_transition(backbone: Backbone, x: torch.Tensor, sigma: float, sigma_next: float,
                       cond: Cond) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The TAFS action distribution: mean (1 - s') x0_hat, std s'.

    This is Coefficients-Preserving Sampling with eta = 1 (DESIGN §5): one function, shared with
    :func:`tafs.sampling.sde.cps_transition`.
    """
    return cps_gaussian(backbone, x, sigma, sigma_next, cond, *cps_coefficients(1.0))


@torch.no_grad()
def sample_annealed(backbone: Backbone, cond: Cond, noise: torch.Tensor, n_annealed: int,
                    generator: torch.Generator | None = None, shift: float = 1.0) -> Trajectory:
    """Run the chain with K = ``n_annealed`` re-noise actions (NFE = K + 1)."""
    sigmas = flow.annealed_sigmas(n_annealed, shift).tolist()
    x = noise
    states, actions, logps, x0s = [], [], [], []
    for n, s in enumerate(sigmas):
        if n == len(sigmas) - 1:  # last call: only the clean estimate
            sig = torch.full((x.shape[0],), s, device=x.device, dtype=x.dtype)
            x0s.append(backbone.predict_x0(x, sig, cond))
            break
        s_next = sigmas[n + 1]
        mean, std, x0_hat = renoise_transition(backbone, x, s, s_next, cond)
        # drawn on the generator's device (a CPU generator with CUDA latents works), then moved
        eps = batch_randn(x.shape, generator, generator.device if generator is not None else x.device,
                          x.dtype).to(x.device)
        a = mean + s_next * eps
        states.append(x), actions.append(a), logps.append(gaussian_log_prob(a, mean, std)), x0s.append(x0_hat)
        x = a
    b = noise.shape[0]
    empty = noise.new_zeros((b, 0, *noise.shape[1:]))
    k = len(actions)
    return Trajectory(
        states=torch.stack(states, 1) if k else empty,
        actions=torch.stack(actions, 1) if k else empty,
        log_probs=torch.stack(logps, 1) if k else noise.new_zeros((b, 0)),
        sigmas=torch.tensor(sigmas[:-1]), sigmas_next=torch.tensor(sigmas[1:]),
        x0_hats=torch.stack(x0s, 1), final=x0s[-1], trained=torch.ones(k, dtype=torch.bool),
        nfe=len(sigmas), action_step=torch.arange(1, k + 1))
