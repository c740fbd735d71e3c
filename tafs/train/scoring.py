"""What an iteration makes of its rewards: every training reward must score every image, and the per-step
reward statistics that metrics.jsonl logs (Table 7's correlations come from them)."""

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


def reward_rows(rewards: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per reward and scored step (k = 2 .. K+1): mean, std, and Pearson r with the final step (Table 7)."""
    row: dict[str, float] = {}
    for name, r in rewards.items():
        last = r.shape[1] - 1
        for s in range(r.shape[1]):
            row[f"reward/{name}/step{s + 2}_mean"] = float(r[:, s].mean())
            row[f"reward/{name}/step{s + 2}_std"] = float(r[:, s].std())
            if s < last:
                row[f"reward/{name}/step{s + 2}_pearson_final"] = pearson(r[:, s], r[:, last])
        row[f"reward/{name}/final_mean"] = float(r[:, last].mean())
    return row
