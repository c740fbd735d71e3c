"""PPO-clip surrogate with a KL penalty to the reference policy (DESIGN §7)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LossParts:
    loss: torch.Tensor
    policy: torch.Tensor
    kl: torch.Tensor
    clip_frac: torch.Tensor
    approx_kl: torch.Tensor
    ratio_mean: torch.Tensor
    max_abs_log_ratio: torch.Tensor  # max |logp - logp_old|: 0 before the first update if logp_old is exact


def ppo_clip_loss(logp: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor, clip_eps: float,
                  kl: torch.Tensor | None = None, beta: float = 0.0) -> LossParts:
    """-(mean min(r A, clip(r, 1-eps, 1+eps) A)) + beta * mean KL; all inputs of one shape."""
    ratio = torch.exp(logp - logp_old)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv
    policy = -torch.minimum(unclipped, clipped).mean()
    kl_term = kl.mean() if kl is not None else torch.zeros((), device=logp.device)
    with torch.no_grad():
        clip_frac = ((ratio - 1).abs() > clip_eps).float().mean()
        approx_kl = 0.5 * ((logp - logp_old) ** 2).mean()
        max_abs = (logp - logp_old).abs().max() if logp.numel() else torch.zeros((), device=logp.device)
    return LossParts(policy + beta * kl_term, policy.detach(), kl_term.detach(), clip_frac, approx_kl,
                     ratio.detach().mean(), max_abs)
