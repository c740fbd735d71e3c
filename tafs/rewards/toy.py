"""The toy world's programmatic rewards: the GenEval-style checker's dense and strict scores."""

from __future__ import annotations

from functools import lru_cache

import torch

from tafs.rewards.registry import RewardFn, register
from tafs.toyworld.evaluator import evaluate_images
from tafs.toyworld.prompts import CATEGORIES, PromptSpec, all_specs


@lru_cache(maxsize=1)
def _spec_index() -> dict[str, PromptSpec]:
    return {s.text: s for c in CATEGORIES for s in all_specs(c)}


def specs_from_texts(texts: list[str]) -> list[PromptSpec]:
    index = _spec_index()
    unknown = [t for t in texts if t not in index]
    if unknown:
        raise KeyError(f"prompts outside the toy world: {unknown[:3]}")
    return [index[t] for t in texts]


def _checker(field: str) -> RewardFn:
    def reward(texts: list[str], images: torch.Tensor) -> torch.Tensor:
        scores = evaluate_images(specs_from_texts(texts), images)
        return torch.tensor([getattr(s, field) for s in scores], dtype=torch.float32)

    return reward


@register("toy_dense")
def toy_dense() -> RewardFn:
    """Fraction of the prompt's constraints met (dense partial credit)."""
    return _checker("dense")


@register("toy_correct")
def toy_correct() -> RewardFn:
    """1 if every constraint is met (GenEval's strict score), else 0."""
    return _checker("correct")
