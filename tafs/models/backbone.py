"""The interface every sampler, trainer and evaluator talks to (DESIGN §3-5).

A backbone owns its text encoder(s), its denoiser and its decoder. Samplers call ``encode``,
``velocity`` / ``predict_x0`` and ``decode``; trainers additionally use ``frozen_modules``,
``add_lora``, ``trainable_parameters``, ``set_denoiser`` (to hand it back wrapped, e.g. by DDP) and
``adapter_disabled`` (the reference policy of the KL term: the base with LoRA switched off). Nothing
outside a backbone sets its attributes.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from tafs import flow
from tafs.models.lora import ATTENTION_TARGETS, LoraSpec, attach_lora, load_lora

__all__ = ["Backbone", "Cond", "LoraSpec"]


@dataclass
class Cond:
    """Encoded prompts: token states (B, L, D) and a pooled vector (B, P)."""

    hidden: torch.Tensor
    pooled: torch.Tensor

    def __len__(self) -> int:
        return self.hidden.shape[0]

    def index(self, idx: torch.Tensor | slice) -> "Cond":
        return Cond(self.hidden[idx], self.pooled[idx])

    def to(self, device: torch.device | str) -> "Cond":
        return Cond(self.hidden.to(device), self.pooled.to(device))

    def repeat_interleave(self, n: int) -> "Cond":
        return Cond(self.hidden.repeat_interleave(n, 0), self.pooled.repeat_interleave(n, 0))

    @staticmethod
    def cat(conds: list["Cond"]) -> "Cond":
        return Cond(torch.cat([c.hidden for c in conds]), torch.cat([c.pooled for c in conds]))


class Backbone(ABC):
    """A text-conditioned flow-matching model in the diffusers conventions."""

    device: torch.device
    lora_targets: tuple[str, ...] = ATTENTION_TARGETS  # the family's LoRA target modules (docs/real-models.md §1)
    default_shift: float = 1.0  # the family's own time shift; a sampler's `shift: null` uses it
    detach_uncond: bool = False  # CFG inside `velocity`: the unconditional half carries no gradient (see below)

    # -- what a model family implements ------------------------------------------------------------
    @property
    @abstractmethod
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one sample in the space the flow runs in (C, H, W)."""

    @abstractmethod
    def encode(self, prompts: list[str]) -> Cond:
        """Prompts -> conditioning on ``self.device`` (no gradient reaches the text encoders)."""

    @abstractmethod
    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        """v_theta(x, sigma, c) with sigma of shape (B,) in [0, 1]."""

    @abstractmethod
    def decode_batch(self, x0: torch.Tensor) -> torch.Tensor:
        """Clean latents -> images (B, 3, H, W) in [0, 1], all at once (``decode`` chunks the calls)."""

    @abstractmethod
    def denoiser(self) -> torch.nn.Module:
        """The module LoRA is attached to (the transformer), possibly wrapped (peft, DDP)."""

    @abstractmethod
    def set_denoiser(self, module: torch.nn.Module) -> None:
        """Replace the denoiser by a wrapped version of itself (peft, DDP)."""

    @abstractmethod
    def frozen_modules(self) -> list[torch.nn.Module]:
        """Modules that never train (text encoders, VAE): the trainer freezes them."""

    @abstractmethod
    def to(self, device: torch.device | str) -> "Backbone":
        """Move every module to ``device`` and remember it as ``self.device``."""

    @abstractmethod
    def save(self, path: str | Path) -> None:
        """Write the model in the hub layout (model_index.json + one folder per component)."""

    # -- shared behaviour ---------------------------------------------------------------------------
    def predict_x0(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        """The one-step clean estimate x - sigma v (models that predict x0 directly override this)."""
        return x - sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1))) * self.velocity(x, sigma, cond)

    @torch.no_grad()
    def decode(self, x0: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Clean latents -> images in [0, 1], ``chunk_size`` samples at a time (None or 0: all at once).

        A VAE decoding B x G x K estimates at 512 px does not fit at once; chunks bound the peak memory.
        """
        if not chunk_size or chunk_size >= len(x0):
            return self.decode_batch(x0)
        return torch.cat([self.decode_batch(c) for c in x0.split(chunk_size)])

    def scheduler_sigmas(self, nfe: int) -> torch.Tensor:
        """The nfe + 1 noise levels (1 down to exactly 0, float64) that the model's own diffusers scheduler
        samples with at ``nfe`` steps: what the base model's users get from its pipeline. The default is
        ``FlowMatchEulerDiscreteScheduler`` at ``default_shift`` (:func:`tafs.flow.scheduler_sigmas`); pipeline
        backbones replicate their pipeline's own call."""
        return flow.scheduler_sigmas(nfe, self.default_shift)

    def add_lora(self, spec: LoraSpec, seed: int | None = None) -> None:
        """Wrap the denoiser in a peft LoRA adapter; base weights are frozen."""
        self.set_denoiser(attach_lora(self.denoiser(), spec, seed))

    def load_adapter(self, path: str | Path, trainable: bool = False) -> None:
        """Apply a trained peft adapter (frozen for inference unless ``trainable``)."""
        self.set_denoiser(load_lora(self.denoiser(), path, trainable).to(self.device))

    def save_adapter(self, path: str | Path) -> None:
        """Write the LoRA adapter (peft layout, safetensors)."""
        module = self.denoiser()
        getattr(module, "module", module).save_pretrained(str(path), safe_serialization=True)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.denoiser().parameters() if p.requires_grad]

    @contextlib.contextmanager
    def adapter_disabled(self) -> Iterator[None]:
        """The reference policy: the same model with its LoRA adapter switched off."""
        module = self.denoiser()
        module = getattr(module, "module", module)  # unwrap DDP
        if not hasattr(module, "disable_adapter"):
            yield
            return
        # peft re-enables the adapter on exit with requires_grad=True everywhere; keep what we had.
        flags = [(p, p.requires_grad) for p in module.parameters()]
        try:
            with module.disable_adapter():
                yield
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)

    @contextlib.contextmanager
    def uncond_detached(self, on: bool = True) -> Iterator[None]:
        """Inside the block, a backbone that runs classifier-free guidance in ``velocity`` (SD3) detaches the
        unconditional prediction: the same values, gradient s * dv_c only. Flow-GRPO's training pass does so
        (scripts/train_sd3.py:189-190, ``noise_pred_uncond.detach()``). Backbones without a negative pass
        (Flux's embedded guidance, the toy model) are unaffected."""
        before, self.detach_uncond = self.detach_uncond, on
        try:
            yield
        finally:
            self.detach_uncond = before

    def velocity_cfg(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond, null: Cond | None,
                     scale: float) -> torch.Tensor:
        """Classifier-free guidance; scale 1 (or no null cond) is the plain conditional velocity."""
        if null is None or scale == 1.0:
            return self.velocity(x, sigma, cond)
        b = x.shape[0]
        both = Cond.cat([cond, null.index(slice(0, 1)).repeat_interleave(b) if len(null) == 1 else null])
        v = self.velocity(torch.cat([x, x]), torch.cat([sigma, sigma]), both)
        v_c, v_u = v[:b], v[b:]
        return v_u + scale * (v_c - v_u)
