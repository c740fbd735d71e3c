"""The toy world's programmatic rewards: the GenEval-style checker's dense and strict scores.

Each prompt's metadata carries its toy spec (``objects`` and ``relation``, written by the toy task's
prompt files), so nothing is looked up from the prompt text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

from tafs.rewards.base import Reward, RewardSpec, check_batch
from tafs.toyworld.prompts import ObjectSpec, PromptSpec

if TYPE_CHECKING:  # torch and the checker load when a reward is built, not when REWARDS is read (`tafs grid`)
    import torch

NEEDS = ("objects",)


def spec_from_metadata(meta: Mapping) -> PromptSpec:
    """The toy spec of one prompt: ``{"objects": [{"shape", "color"?}, ...], "relation"?: str}``."""
    objects = tuple(ObjectSpec(o["shape"], o.get("color")) for o in meta["objects"])
    return PromptSpec(str(meta.get("category", "")), objects, meta.get("relation"))


def _checker(field: str) -> Reward:
    import torch

    from tafs.toyworld.evaluator import evaluate_images

    def reward(prompts: Sequence[str], metadata: Sequence[Mapping], images: torch.Tensor) -> torch.Tensor:
        check_batch(prompts, metadata, images)
        scores = evaluate_images([spec_from_metadata(m) for m in metadata], images)
        # float64: the checker's fractions (1/3, 5/6...) exactly; the trainer casts rewards to fp32 itself
        return torch.tensor([getattr(s, field) for s in scores], dtype=torch.float64)

    return reward


def toy_dense() -> Reward:
    """Fraction of the prompt's constraints met (dense partial credit)."""
    return _checker("dense")


def toy_correct() -> Reward:
    """1 if every constraint is met (GenEval's strict score), else 0."""
    return _checker("correct")


REWARDS = {
    "toy_dense": RewardSpec("toy_dense", toy_dense, "Dense score", "toy checker: fraction of the prompt's "
                            "constraints met, scaled down by extra objects (GenEval-style partial credit)",
                            NEEDS, percent=True, scale="fraction in [0, 1]", source="toy checker (in-process)"),
    "toy_correct": RewardSpec("toy_correct", toy_correct, "Strict acc.", "toy checker: 1 if every constraint "
                              "(objects, count, colours, relation) is met, else 0 (GenEval's strict score)",
                              NEEDS, percent=True, scale="1/0 an image", source="toy checker (in-process)"),
}
