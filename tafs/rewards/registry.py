"""Named rewards. A reward maps (prompt texts, images (N, 3, H, W) in [0, 1]) to scores (N,).

Toy rewards are programmatic and non-differentiable; real ones (PickScore, CLIP, HPS, ...) load
their models from a local folder or the hub and register the same way.
"""

from __future__ import annotations

from typing import Callable

import torch

RewardFn = Callable[[list[str], torch.Tensor], torch.Tensor]
_FACTORIES: dict[str, Callable[..., RewardFn]] = {}


def register(name: str) -> Callable[[Callable[..., RewardFn]], Callable[..., RewardFn]]:
    def deco(factory: Callable[..., RewardFn]) -> Callable[..., RewardFn]:
        _FACTORIES[name] = factory
        return factory

    return deco


def available() -> list[str]:
    _load_builtin()
    return sorted(_FACTORIES)


def build(name: str, **kwargs) -> RewardFn:
    _load_builtin()
    if name not in _FACTORIES:
        raise KeyError(f"unknown reward {name!r}; available: {sorted(_FACTORIES)}")
    return _FACTORIES[name](**kwargs)


def _load_builtin() -> None:
    from tafs.rewards import clip_score, toy  # noqa: F401  (register themselves)
