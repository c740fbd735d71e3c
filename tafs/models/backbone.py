"""The interface every sampler, trainer and evaluator talks to (DESIGN §3-5).

A backbone owns its text encoder and denoiser. Samplers only ever call ``encode``, ``velocity``
and ``decode``; trainers additionally use ``trainable_parameters``, ``add_lora`` and
``adapter_disabled`` (the reference policy of the KL term is the base with LoRA switched off).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterator

import torch


@dataclass
class Cond:
    """Encoded prompts: token states (B, L, D) and a pooled vector (B, P)."""

    hidden: torch.Tensor
    pooled: torch.Tensor

    def __len__(self) -> int:
        return self.hidden.shape[0]

    def index(self, idx: torch.Tensor | slice) -> "Cond":
        return Cond(self.hidden[idx], self.pooled[idx])

    def repeat_interleave(self, n: int) -> "Cond":
        return Cond(self.hidden.repeat_interleave(n, 0), self.pooled.repeat_interleave(n, 0))

    @staticmethod
    def cat(conds: list["Cond"]) -> "Cond":
        return Cond(torch.cat([c.hidden for c in conds]), torch.cat([c.pooled for c in conds]))


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 32
    alpha: int = 64
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0",
                                       "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


class Backbone(ABC):
    """A text-conditioned flow-matching model in the diffusers conventions."""

    device: torch.device

    @property
    @abstractmethod
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one sample in the space the flow runs in (C, H, W)."""

    @abstractmethod
    def encode(self, prompts: list[str]) -> Cond: ...

    @abstractmethod
    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        """v_theta(x, sigma, c) with sigma of shape (B,) in [0, 1]."""

    def predict_x0(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        """The one-step clean estimate x - sigma v (models that predict x0 directly override this)."""
        return x - sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1))) * self.velocity(x, sigma, cond)

    @abstractmethod
    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Clean latents -> images (B, 3, H, W) in [0, 1]."""

    @abstractmethod
    def denoiser(self) -> torch.nn.Module:
        """The module LoRA is attached to (transformer)."""

    @abstractmethod
    def save(self, path: str) -> None: ...

    def add_lora(self, spec: LoraSpec, seed: int | None = None) -> None:
        """Wrap the denoiser in a peft LoRA adapter; base weights are frozen."""
        from tafs.models.lora import attach_lora

        attach_lora(self, spec, seed)

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
