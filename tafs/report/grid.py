"""Image grids with their prompts, for eyeballing samples."""

from __future__ import annotations

from pathlib import Path

import torch

from tafs.io import atomic_path
from tafs.toyworld.prompts import CATEGORIES, PromptSpec


def pick_per_category(specs: list[PromptSpec], per_cat: int) -> list[int]:
    """Indices of the first ``per_cat`` samples of each category (rows of the grid)."""
    out = []
    for c in CATEGORIES:
        out += [i for i, s in enumerate(specs) if s.category == c][:per_cat]
    return out


def save_grid(images: torch.Tensor, specs: list[PromptSpec], path: Path, title: str = "", per_cat: int = 8) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = pick_per_category(specs, per_cat)
    rows = max(1, -(-len(idx) // per_cat))
    fig, axes = plt.subplots(rows, per_cat, figsize=(per_cat * 1.3, rows * 1.45), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, i in enumerate(idx):
        ax = axes.flat[k]
        ax.imshow(images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(specs[i].text, fontsize=5)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
