"""How a model is loaded and run: resolution, precision per component, guidance, text length.

Config ``model:`` (and ``eval.resolution`` for evaluation jobs) fills these; every backbone takes them,
the toy backbone ignores what it has no use for (it has a fixed 32 px pixel space).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # validating options does not import torch
    import torch

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # config name -> torch dtype name


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a config precision name (``fp32`` | ``bf16`` | ``fp16``)."""
    import torch

    return getattr(torch, DTYPES[name])


@dataclass(frozen=True)
class ModelOptions:
    resolution: int | None = None  # image side in px; None: the model's own default size
    dtype: str = "fp32"  # the denoiser (transformer): fp32 | bf16 | fp16
    text_dtype: str = "fp32"  # the text encoders
    vae_dtype: str = "fp32"  # the VAE (fp32 recommended: it decodes every scored estimate)
    guidance_scale: float | None = None  # None: the family's default (SD3: CFG 4.5; Flux: embedded 3.5)
    negative_prompt: str = ""  # SD3's classifier-free guidance
    max_sequence_length: int = 128  # T5 tokens (Flow-GRPO: 128)
    gradient_checkpointing: bool = False  # trade compute for activation memory while training

    def __post_init__(self) -> None:
        for key in ("dtype", "text_dtype", "vae_dtype"):
            if getattr(self, key) not in DTYPES:
                raise ValueError(f"model.{key} must be one of {sorted(DTYPES)}, got {getattr(self, key)!r}")
        if self.resolution is not None and self.resolution < 8:
            raise ValueError(f"model.resolution must be >= 8 px, got {self.resolution}")
        if self.max_sequence_length < 1:
            raise ValueError(f"model.max_sequence_length must be >= 1, got {self.max_sequence_length}")

    def torch_dtype(self, component: str) -> torch.dtype:
        return torch_dtype({"transformer": self.dtype, "vae": self.vae_dtype}.get(component, self.text_dtype))
