"""What an iteration makes of its rewards: which one-step estimates are decoded and scored (only those the
advantages read), every training reward must score every image, and the per-step reward statistics that
metrics.jsonl logs (Table 7's correlations come from them)."""

from __future__ import annotations

import torch

from tafs.stats import pearson


def finite(name: str, scores: torch.Tensor) -> torch.Tensor:
    """A training reward must score every image: a NaN (a judge's unparsable answer) would poison the group's
    advantages, so it stops training with the count instead of being replaced by a made-up value."""
    bad = int(torch.isnan(scores).sum())
    if bad:
        raise RuntimeError(f"reward {name!r} could not score {bad} of {len(scores)} images (NaN); it cannot be a "
                           "training reward as configured (see its log lines for the raw answers)")
    return scores


def scored_count(num_estimates: int, n_adv: int) -> int:
    """k, how many of an iteration's one-step estimates are decoded and rewarded: the last ``n_adv`` of the
    num_estimates - 1 scorable ones (the first, from pure noise, never is). The advantages read no other step
    (DESIGN §6), so a baseline with final-image advantages (N_adv = 1) decodes and scores its final image only, as
    its authors' code does, instead of every step's estimate."""
    return max(1, min(n_adv, num_estimates - 1))


def first_scored(num_estimates: int, k: int) -> int:
    """The scored-step index (0 = ``x0_hats[:, 1]``) of the first of the k scored estimates ``x0_hats[:, -k:]``:
    ``first`` of :func:`tafs.train.advantages.action_weights`."""
    return num_estimates - 1 - k


def reward_rows(rewards: dict[str, torch.Tensor], first_step: int = 2) -> dict[str, float]:
    """Per reward and scored step (k = first_step .. K+1; 2 when every step is scored): mean, std, and Pearson r
    with the final step (Table 7)."""
    row: dict[str, float] = {}
    for name, r in rewards.items():
        last = r.shape[1] - 1
        for s in range(r.shape[1]):
            step = s + first_step
            row[f"reward/{name}/step{step}_mean"] = float(r[:, s].mean())
            row[f"reward/{name}/step{step}_std"] = float(r[:, s].std())
            if s < last:
                row[f"reward/{name}/step{step}_pearson_final"] = pearson(r[:, s], r[:, last])
        row[f"reward/{name}/final_mean"] = float(r[:, last].mean())
    return row
