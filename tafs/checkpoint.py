"""Resumable checkpoints, one per run folder, written atomically and keyed by the config they were made with.

The trainer keys them by its run's identity (tafs.train.identity: what changes the result, not memory or
speed settings). A re-run with the same identity resumes; a re-run after it changed starts afresh instead
of resuming someone else's state. Checkpoints are read with
``torch.load(weights_only=True)``: no code in a checkpoint file ever runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tafs.config import redact
from tafs.hashing import config_hash
from tafs.io import atomic_path


def checkpoint_path(ckpt_dir: Path, config: dict[str, Any]) -> Path:
    return Path(ckpt_dir) / f"checkpoint-{config_hash(redact(config), 12)}.pt"


def save_checkpoint(ckpt_dir: Path, state: dict[str, Any], config: dict[str, Any]) -> None:
    config = redact(config)  # the key and the stored copy: no token or API key in the results
    path = checkpoint_path(ckpt_dir, config)
    with atomic_path(path) as tmp:
        torch.save({**state, "config": config}, tmp)
    for stale in Path(ckpt_dir).glob("checkpoint-*.pt"):  # checkpoints of older configs
        if stale != path:
            stale.unlink(missing_ok=True)


def _read(path: Path, map_location: Any = None) -> dict[str, Any]:
    try:  # tensors, numbers, strings and containers only: nothing in the file is executed
        return torch.load(path, weights_only=True, map_location=map_location)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: say which and what to do
        raise ValueError(f"{path}: cannot read this checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                         "delete it to start the run afresh") from e


def other_checkpoints(ckpt_dir: Path, config: dict[str, Any], map_location: Any = None) -> list[dict[str, Any]]:
    """The states of checkpoints in ``ckpt_dir`` saved under another config (newest first): what a changed
    config would replace, or what an older tafs keyed by its whole config."""
    mine = checkpoint_path(ckpt_dir, redact(config))
    files = [p for p in Path(ckpt_dir).glob("checkpoint-*.pt") if p != mine]
    return [_read(p, map_location) for p in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)]


def load_checkpoint(ckpt_dir: Path, config: dict[str, Any], map_location: Any = None) -> dict[str, Any] | None:
    """The state saved under exactly this config, or None (nothing to resume)."""
    config = redact(config)
    path = checkpoint_path(ckpt_dir, config)
    if not path.exists():
        return None
    state = _read(path, map_location)
    if state["config"] != config:  # a hash collision: never resume foreign state
        return None
    return state
