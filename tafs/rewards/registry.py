"""Rewards by name, loaded lazily: the name -> module table is data; a module is imported when used.

A new reward is a module defining ``REWARDS = {name: RewardSpec(...)}`` and one line in ``BUILTIN``
(or ``register(spec)`` at run time, e.g. from a test or a plug-in). Nothing here imports a reward module
at import time, and reward modules never import this one: no cycle.
"""

from __future__ import annotations

import importlib
from typing import Any

from tafs.config import ConfigError
from tafs.rewards.base import Reward, RewardSpec

BUILTIN: dict[str, str] = {
    "toy_dense": "tafs.rewards.toy",
    "toy_correct": "tafs.rewards.toy",
    "clip": "tafs.rewards.clip",
    "pickscore": "tafs.rewards.pickscore",
    "hpsv2": "tafs.rewards.hpsv2",
    "imagereward": "tafs.rewards.imagereward",
    "geneval": "tafs.rewards.geneval.reward",
    "geneval_score": "tafs.rewards.geneval.reward",
    "unifiedreward": "tafs.rewards.unified_reward",
}
_EXTRA: dict[str, RewardSpec] = {}


def register(spec: RewardSpec) -> None:
    """Add (or replace) a reward at run time."""
    _EXTRA[spec.name] = spec


def unregister(name: str) -> None:
    _EXTRA.pop(name, None)


def available() -> list[str]:
    return sorted({*BUILTIN, *_EXTRA})


def spec(name: str, where: str = "reward") -> RewardSpec:
    """The spec of reward ``name``; an unknown name raises ConfigError naming ``where`` (the config key)."""
    if name in _EXTRA:
        return _EXTRA[name]
    if name not in BUILTIN:
        raise ConfigError(f"{where}: unknown reward {name!r}; available: {available()} "
                          "(`python -m tafs rewards` describes them)")
    module = importlib.import_module(BUILTIN[name])
    return module.REWARDS[name]


def build(name: str, **kwargs: Any) -> Reward:
    return spec(name).factory(**kwargs)


def check_kwargs(name: str, kwargs: dict[str, Any], where: str) -> None:
    """Every option in config ``reward_models.<name>`` is a keyword of the reward's factory (checked when the
    DAG is built, instead of failing inside a job)."""
    import inspect

    params = inspect.signature(spec(name, where).factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {unknown} of reward {name!r}; it takes {sorted(params)}")


def check_names(names, where: str) -> None:
    """Every name is a known reward (without importing any reward module)."""
    unknown = sorted(n for n in names if n not in BUILTIN and n not in _EXTRA)
    if unknown:
        raise ConfigError(f"{where}: unknown reward(s) {unknown}; available: {available()} "
                          "(`python -m tafs rewards` describes them)")
