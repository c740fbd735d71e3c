"""Resumable checkpoints: one ``checkpoint.pt`` per run folder, written atomically, tied to its config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tafs.io import atomic_path

NAME = "checkpoint.pt"


def save_checkpoint(ckpt_dir: Path, state: dict[str, Any], config: dict[str, Any]) -> None:
    with atomic_path(Path(ckpt_dir) / NAME) as tmp:
        torch.save({**state, "config": config}, tmp)


def load_checkpoint(ckpt_dir: Path, config: dict[str, Any], map_location: Any = None) -> dict[str, Any] | None:
    """The saved state, or None if there is none; refuses a checkpoint written under another config."""
    path = Path(ckpt_dir) / NAME
    if not path.exists():
        return None
    state = torch.load(path, weights_only=False, map_location=map_location)
    if state["config"] != config:
        raise ValueError(f"checkpoint {path} was written with another config; delete {ckpt_dir} to start afresh "
                         "or restore the config it was written with")
    return state
