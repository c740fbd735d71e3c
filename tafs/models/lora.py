"""LoRA through peft: attach, save, load. The adapter is the only thing RL trains."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from tafs.models.backbone import Backbone, LoraSpec


def _set_denoiser(backbone: "Backbone", module: torch.nn.Module) -> None:
    backbone.transformer = module  # every backbone keeps its denoiser as ``transformer``


def attach_lora(backbone: "Backbone", spec: "LoraSpec", seed: int | None = None) -> None:
    from peft import LoraConfig, get_peft_model

    base = backbone.denoiser()
    names = {n.rsplit(".", 1)[-1] if not n.endswith("to_out.0") else "to_out.0" for n, _ in base.named_modules()}
    targets = [t for t in spec.target_modules if t in names]
    if not targets:
        raise ValueError(f"none of the LoRA target_modules {spec.target_modules} exist in {type(base).__name__}")
    cfg = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets,
                     init_lora_weights=True)
    if seed is not None:
        torch.manual_seed(seed)
    _set_denoiser(backbone, get_peft_model(base, cfg))


def save_lora(backbone: "Backbone", path: str | Path) -> None:
    backbone.denoiser().save_pretrained(str(path), safe_serialization=True)


def load_lora(backbone: "Backbone", path: str | Path, trainable: bool = False) -> None:
    from peft import PeftModel

    model = PeftModel.from_pretrained(backbone.denoiser(), str(path), is_trainable=trainable)
    _set_denoiser(backbone, model.to(backbone.device))
