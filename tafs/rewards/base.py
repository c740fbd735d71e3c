"""What a reward is: ``(prompts, metadata, images) -> scores``, plus the facts the pipeline needs about it.

A reward module defines ``REWARDS: dict[str, RewardSpec]``; ``tafs.rewards.registry`` maps each name to its
module and imports it only when the reward is built or listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Protocol, Sequence

if TYPE_CHECKING:  # reading a reward spec (the `grid_manifest` job, `tafs grid`) does not import torch
    import torch


class Reward(Protocol):
    """Scores (N,) on the CPU (float32 or float64) for N images (N, 3, H, W) in [0, 1] of N prompts with their
    metadata. NaN marks an image the reward could not score (e.g. a judge's unparsable answer): evaluations
    count and report those, training refuses them; a reward never substitutes a made-up score."""

    def __call__(self, prompts: Sequence[str], metadata: Sequence[Mapping], images: torch.Tensor) -> torch.Tensor:
        ...


@dataclass(frozen=True)
class RewardSpec:
    name: str
    factory: Callable[..., Reward]  # keyword arguments come from config `reward_models.<name>`
    label: str  # how tables name it
    description: str  # one line, for `python -m tafs rewards`
    needs: tuple[str, ...] = ()  # metadata keys every prompt must carry
    percent: bool = False  # a fraction in [0, 1] that tables show in %
    scale: str = ""  # the score's scale and typical range, for `python -m tafs rewards` (e.g. "100 x cosine, ~26-30")
    source: str = ""  # where its model comes from by default (a hub id, "in-process", "toy checker")


def check_batch(prompts: Sequence[str], metadata: Sequence[Mapping], images: torch.Tensor) -> None:
    """The shapes every reward expects; a mismatch is a bug in the caller, said plainly."""
    if not len(prompts) == len(metadata) == len(images):
        raise ValueError(f"{len(prompts)} prompts, {len(metadata)} metadata and {len(images)} images: "
                         "one of each per sample")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (N, 3, H, W), got {tuple(images.shape)}")
