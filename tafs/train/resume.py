"""Which checkpoint a training run resumes, and why it does not (tafs.train.identity says what a run is).

The run's log says either "resuming from iteration N" or, when the run folder holds a checkpoint of another
identity, "checkpoint at iteration N was written by a different config: <keys>; starting from 0".
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tafs.checkpoint import load_checkpoint, other_checkpoints
from tafs.io import atomic_path, read_jsonl
from tafs.train.identity import differing, train_identity

Trainer = Any  # tafs.train.trainer.Trainer, which imports this module (no import cycle)

log = logging.getLogger(__name__)


def checkpoint_identity(trainer: Trainer) -> dict[str, Any]:
    """What ``trainer``'s checkpoints are keyed by: the identity the CLI set (the job's config as the DAG
    tracks it, with its data and model), else the training config less its runtime settings."""
    return trainer.identity if trainer.identity is not None else {"train": train_identity(asdict(trainer.cfg))}


def _legacy_match(stored: dict[str, Any], train_cfg: dict[str, Any]) -> bool:
    """A checkpoint of an earlier tafs stored the whole training config (no ``train`` section): it is this
    run's when the two configs differ in runtime settings only."""
    return "train" not in stored and train_identity(stored) == train_identity(train_cfg)


def resume_state(ckpt_dir: Path, identity: dict[str, Any], train_cfg: dict[str, Any],
                 map_location: Any = None) -> dict[str, Any] | None:
    """The state this run resumes from, or None (start from 0), logging which and why."""
    state = load_checkpoint(ckpt_dir, identity, map_location)
    if state is None:
        others = other_checkpoints(ckpt_dir, identity, map_location)
        if others and _legacy_match(others[0]["config"], train_cfg):
            state = others[0]
        elif others:
            old = others[0]
            keys = differing(old["config"], identity)
            log.warning("checkpoint at iteration %d was written by a different config: %s; starting from 0",
                        old["iteration"], ", ".join(keys[:20]) + (" ..." if len(keys) > 20 else ""))
            return None
    if state is not None:
        log.info("resuming from iteration %d (checkpoint in %s)", state["iteration"], ckpt_dir)
    return state


def drop_metrics_after(mpath: Path, iteration: int) -> None:
    """Keep the rows of iterations before ``iteration`` (the resumed checkpoint's): later ones are recomputed."""
    if mpath.exists():
        rows = [r for r in read_jsonl(mpath) if r["iteration"] < iteration]
        with atomic_path(mpath) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
