"""Intermediate adapters (``train.snapshot_every``): a run's adapter every N iterations, to choose a checkpoint
or to see reward hacking before the end.

Each snapshot is written like the final adapter (``Trainer.export``: peft layout + diffusers'
``pytorch_lora_weights.safetensors`` via ``Backbone.save_adapter``, the EMA weights when the run keeps an EMA),
atomically, into ``tafs.paths.snapshot_dir`` of the run's checkpoint folder (outside the Snakemake outputs).
A snapshot is written before the checkpoint of the same iteration, so a job stopped in between re-trains that
iteration on resume and writes it then; an existing snapshot is never rewritten (a resumed run continues
exactly, so it would be the same). ``snapshot_keep_last`` K keeps only the K newest.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from tafs.io import atomic_dir
from tafs.paths import eval_grids_dir, snapshot_dir, snapshots_dir
from tafs.train.ema import LoraEma

# tafs.train.trainer's classes, which import this module (no import cycle)
Trainer = Any

log = logging.getLogger(__name__)


def check(every: int | None, keep_last: int | None) -> None:
    """Refuse negative values (0 / None: no snapshots; keep_last None: keep all)."""
    if every is not None and (not isinstance(every, int) or every < 0):
        raise ValueError(f"train.snapshot_every must be a non-negative integer or null, got {every!r}")
    if keep_last is not None and (not isinstance(keep_last, int) or keep_last < 1):
        raise ValueError(f"train.snapshot_keep_last must be a positive integer or null, got {keep_last!r}")


def due(iteration: int, every: int | None) -> bool:
    """Whether a snapshot is written after ``iteration`` iterations."""
    return bool(every) and iteration > 0 and iteration % every == 0


def existing(ckpt_dir: Path) -> list[Path]:
    """The run's snapshot folders, oldest first (temporary folders start with a dot and are skipped)."""
    root = snapshots_dir(ckpt_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("iter"))


def prune(ckpt_dir: Path, keep_last: int | None) -> list[Path]:
    """Delete all but the ``keep_last`` newest snapshots; returns the deleted folders."""
    old = existing(ckpt_dir)[:-keep_last] if keep_last else []
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    return old


def clear(trainer: Trainer) -> None:
    """A run that starts afresh drops the snapshots and in-training evaluation grids of the run it replaces (as
    it drops its metrics.jsonl): they were trained by another config, or are recomputed."""
    if not trainer.accel.is_main_process:
        return
    for folder in (snapshots_dir(trainer.ckpt_dir), eval_grids_dir(trainer.ckpt_dir)):
        if folder.exists():
            log.info("starting afresh: removing the earlier run's %s", folder)
            shutil.rmtree(folder, ignore_errors=True)


def save_adapter(trainer: Trainer, out: Path) -> None:
    """The adapter as ``export`` writes it (EMA weights when kept), atomically into ``out``."""
    with atomic_dir(out) as tmp, LoraEma.weights_of(trainer.ema):
        trainer.backbone.save_adapter(tmp)


def after_iteration(trainer: Trainer) -> Path | None:
    """The trainer's hook after each iteration (main process): write the snapshot when due, then prune."""
    cfg = trainer.cfg
    if not trainer.accel.is_main_process or not due(trainer.iteration, cfg.snapshot_every):
        return None
    out = snapshot_dir(trainer.ckpt_dir, trainer.iteration)
    if not out.exists():
        save_adapter(trainer, out)
    prune(trainer.ckpt_dir, cfg.snapshot_keep_last)
    return out
