"""A tiny random stand-in for ``yuvalkirstain/PickScore_v1``, saved in its hub layout.

PickScore is a transformers ``CLIPModel`` (CLIP-H: gelu activations, logit scale ~100) with its tokenizer and
``preprocessor_config.json`` next to it, so the tiny one is the tiny CLIP of ``tiny/clip.py`` with gelu and
logit_scale = ln 100: ``logit_scale.exp()`` x cosine then has the real model's scale factor.
"""

from __future__ import annotations

import math
from pathlib import Path

from tafs.rewards.tiny.clip import save_clip_folder


def save_tiny(folder: Path, seed: int = 0) -> Path:
    return save_clip_folder(folder, seed, hidden_act="gelu", logit_scale=math.log(100.0))
