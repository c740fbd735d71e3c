"""Load any backbone from a folder: the toy model, or a real diffusers pipeline (SD3 / Flux)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tafs.models.backbone import Backbone


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_backbone(path: str | Path, adapter: str | Path | None = None,
                  device: str | torch.device | None = None) -> Backbone:
    """Dispatch on the folder's ``model_index.json`` (the hub layout)."""
    path = Path(path)
    index_file = path / "model_index.json"
    if not index_file.exists():
        raise FileNotFoundError(f"{index_file} not found: expected a model folder in the hub layout")
    cls = json.loads(index_file.read_text()).get("_class_name")
    device = device or default_device()
    if cls == "TafsToyPipeline":
        from tafs.models.toy import ToyBackbone

        backbone: Backbone = ToyBackbone.load(path, device)
    else:
        raise ValueError(f"{index_file}: unsupported pipeline class {cls!r}")
    backbone.denoiser().eval()
    if adapter:
        from tafs.models.lora import load_lora

        load_lora(backbone, adapter)
    return backbone
