"""A tiny random stand-in for HPSv2.1: ``HPS_v2.1_compressed.pt`` + ``open_clip_config.json`` in one folder.

The real hub repo ``xswu/HPSv2`` holds only the checkpoint (``{"state_dict": ...}`` of an open_clip
ViT-H-14); the tiny folder adds the open_clip layout's ``open_clip_config.json`` describing a 2-layer ViT
(224 px, 32 px patches, width 32) and text tower (77 tokens, open_clip's own 49408-token BPE vocabulary, so
its ``SimpleTokenizer`` works offline). The reward builds the model from that config and loads the
checkpoint with the code that loads the real one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tafs.rewards.tiny.clip import CLIP_MEAN, CLIP_STD

MODEL_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "head_width": 16, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
PREPROCESS_CFG = {"size": 224, "mean": list(CLIP_MEAN), "std": list(CLIP_STD), "interpolation": "bicubic",
                  "resize_mode": "longest", "fill_color": 0}


def save_tiny(folder: Path, seed: int = 0) -> Path:
    import open_clip

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": MODEL_CFG,
                                                             "preprocess_cfg": PREPROCESS_CFG}, indent=2))
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    torch.save({"epoch": 1, "name": "tiny", "state_dict": model.state_dict()}, folder / "HPS_v2.1_compressed.pt")
    return folder
