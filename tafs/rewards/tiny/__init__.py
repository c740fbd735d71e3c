"""Tiny random reward models of the real classes, saved in the real hub layouts.

No weights can be downloaded where this project is tested, so the real loading code of every reward runs on
these (CPU smoke runs of the DAG, tests, the CPU benchmark). A config names one as a model source,
``reward_models.pickscore.path: {tiny: pickscore}``, and the DAG's ``tiny_reward`` rule builds it;
``python -m tafs tiny-reward --model pickscore --out DIR`` writes one by hand. The scores of random
weights are meaningless: they test plumbing, not quality.
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
from pathlib import Path

# name -> ("module:function(folder, seed) -> folder", the sub-folder the reward loads; "" = the folder itself)
BUILDERS: dict[str, tuple[str, str]] = {
    "clip": ("tafs.rewards.tiny.clip:save_tiny", ""),
    "pickscore": ("tafs.rewards.tiny.pickscore:save_tiny", ""),
    "hpsv2": ("tafs.rewards.tiny.hpsv2:save_tiny", ""),
    "imagereward": ("tafs.rewards.tiny.imagereward:save_tiny", ""),
    "geneval_detector": ("tafs.rewards.tiny.geneval:save_tiny", "detector"),
    "geneval_clip": ("tafs.rewards.tiny.geneval:save_tiny", "clip"),
    "unifiedreward": ("tafs.rewards.tiny.unifiedreward:save_tiny", ""),
}


def names() -> list[str]:
    return sorted(BUILDERS)


def model_folder(name: str, folder: str | Path) -> Path:
    """Where the reward finds tiny model ``name`` inside the folder its builder wrote."""
    sub = BUILDERS[name][1]
    return Path(folder) / sub if sub else Path(folder)


def build(name: str, out: str | Path, seed: int = 0) -> Path:
    """Write tiny model ``name`` into ``out`` atomically (a temporary sibling renamed into place)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown tiny reward model {name!r}; available: {names()}")
    module, _, attr = BUILDERS[name][0].partition(":")
    save = getattr(importlib.import_module(module), attr)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    save(tmp, seed)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="tafs tiny-reward", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=names(), required=True)
    p.add_argument("--out", required=True, help="folder to write (the real model's hub layout)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    return build(a.model, a.out, a.seed)
