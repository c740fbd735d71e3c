"""Image grids with their prompts, for eyeballing samples: one row per category (or the first images)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch

from tafs.io import atomic_path
from tafs.prompts import Prompt


def pick_rows(prompts: Sequence[Prompt], per_row: int, max_rows: int = 8) -> list[int]:
    """Indices of the first ``per_row`` samples of each category, in order of first appearance; without
    categories the first ``per_row * max_rows`` samples."""
    if any(p.category is None for p in prompts):
        return list(range(min(len(prompts), per_row * max_rows)))
    out = []
    for c in dict.fromkeys(p.category for p in prompts):
        out += [i for i, p in enumerate(prompts) if p.category == c][:per_row]
    return out


def save_grid(images: torch.Tensor | Mapping[int, torch.Tensor], prompts: Sequence[Prompt], path: Path, title: str = "",
              per_row: int = 8) -> None:
    """The images of ``pick_rows(prompts, per_row)`` (``images``: every image, or those at least, by index)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = pick_rows(prompts, per_row)
    rows = max(1, -(-len(idx) // per_row))
    fig, axes = plt.subplots(rows, per_row, figsize=(per_row * 1.3, rows * 1.45), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, i in enumerate(idx):
        ax = axes.flat[k]
        ax.imshow(images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(prompts[i].text, fontsize=5)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
