"""One loader for every model: dispatch on the folder's ``model_index.json`` (the hub layout).

``PIPELINES`` maps a diffusers pipeline class name to the backbone class that loads it; a new model
family is a module with a ``Backbone`` subclass (``load(path, device)``) and one line here.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from tafs.models.options import ModelOptions

if TYPE_CHECKING:  # checking a model folder (pipeline_class) does not import torch
    import torch

    from tafs.models.backbone import Backbone

PIPELINES: dict[str, str] = {
    "TafsToyPipeline": "tafs.models.toy:ToyBackbone",
    "StableDiffusion3Pipeline": "tafs.models.sd3:SD3Backbone",
    "FluxPipeline": "tafs.models.flux:FluxBackbone",
}


def default_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pipeline_class(path: str | Path) -> str:
    """The ``_class_name`` of a model folder; errors name the file and say what a model folder is."""
    index_file = Path(path) / "model_index.json"
    if not index_file.is_file():
        raise FileNotFoundError(f"{index_file} not found: model.pretrained must be a model folder in the hub "
                                "layout (model_index.json + one folder per component)")
    try:
        cls = json.loads(index_file.read_text()).get("_class_name")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise ValueError(f"{index_file}: not a JSON object with '_class_name' ({e})") from e
    if cls not in PIPELINES:
        raise ValueError(f"{index_file}: unsupported pipeline class {cls!r}; supported: {sorted(PIPELINES)}")
    return cls


def load_backbone(path: str | Path, adapter: str | Path | None = None, device: str | torch.device | None = None,
                  options: ModelOptions | None = None) -> Backbone:
    """The backbone of a model folder on ``device`` (default: CUDA when available), in eval mode,
    with the LoRA ``adapter`` applied when given."""
    module, _, name = PIPELINES[pipeline_class(path)].partition(":")
    cls = getattr(importlib.import_module(module), name)
    backbone: Backbone = cls.load(Path(path), device or default_device(), options or ModelOptions())
    backbone.denoiser().eval()
    if adapter:
        backbone.load_adapter(adapter)
    return backbone
