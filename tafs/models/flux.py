"""FLUX.1 (``FluxPipeline``): a DiT on 2x2-packed VAE latents with image/text position ids, CLIP-L (pooled) + T5,
guidance distilled into an embedding (no negative pass), a time shift that depends on the image's token count."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from tafs.models.backbone import Cond
from tafs.models.lora import ATTENTION_TARGETS
from tafs.models.pipeline_backbone import PipelineBackbone

FF_TARGETS = ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")


class FluxBackbone(PipelineBackbone):
    pipeline_class = "FluxPipeline"
    text_components = ("text_encoder", "text_encoder_2")
    lora_targets = ATTENTION_TARGETS + FF_TARGETS  # docs/real-models.md §1
    default_guidance = 3.5
    patch_multiple = 2  # latents are packed 2x2 into tokens

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.guidance_embeds = bool(self.transformer.config.guidance_embeds)  # FLUX.1-dev yes, schnell no

    def native_resolution(self) -> int:
        return int(self.pipe.default_sample_size) * self.pipe.vae_scale_factor

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Cond:
        hidden, pooled, _ = self.pipe.encode_prompt(prompt=list(prompts), prompt_2=None, device=self.device,
                                                    max_sequence_length=self.options.max_sequence_length)
        return self._text_out(hidden, pooled)

    @property
    def image_tokens(self) -> int:
        _, h, w = self.latent_shape
        return (h // 2) * (w // 2)

    @property
    def default_shift(self) -> float:
        """exp(mu) with mu linear in the image's token count (the pipeline's ``calculate_shift``): at 512 px
        FLUX.1-dev's 1024 tokens give about 1.47, at 1024 px (4096 tokens) about 3.16."""
        cfg = self.pipe.scheduler.config
        if not cfg.get("use_dynamic_shifting", False):
            return float(cfg.get("shift", 1.0))
        base_len, max_len = cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096)
        base, top = cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15)
        mu = base + (top - base) * (self.image_tokens - base_len) / (max_len - base_len)
        return math.exp(mu)

    def timestep_kwargs(self, nfe: int) -> dict[str, Any]:
        """``FluxPipeline.__call__`` (step 5): sigmas = linspace(1, 1/nfe, nfe), mu from its ``calculate_shift`` at
        the packed latent's token count; the scheduler shifts them with exp(mu) and appends 0, so the grid is
        :func:`tafs.flow.ode_sigmas` at ``default_shift``."""
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        cfg = self.pipe.scheduler.config
        mu = calculate_shift(self.image_tokens, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                             cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))
        if cfg.get("use_flow_sigmas", False):  # the pipeline then lets the scheduler space them
            return {"num_inference_steps": nfe, "mu": mu}
        return {"sigmas": np.linspace(1.0, 1 / nfe, nfe), "mu": mu}

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        b, c, h, w = x.shape
        packed = self.pipe._pack_latents(x.to(self.dtype), b, c, h, w)
        img_ids = self.pipe._prepare_latent_image_ids(b, h // 2, w // 2, self.device, self.dtype)
        txt_ids = torch.zeros(cond.hidden.shape[1], 3, device=self.device, dtype=self.dtype)
        guidance = torch.full((b,), self.guidance, device=self.device, dtype=torch.float32) \
            if self.guidance_embeds else None
        out = self.transformer(hidden_states=packed, timestep=sigma.to(self.device, torch.float32).expand(b),
                               guidance=guidance, pooled_projections=cond.pooled.to(self.dtype),
                               encoder_hidden_states=cond.hidden.to(self.dtype), txt_ids=txt_ids, img_ids=img_ids,
                               return_dict=False)[0]
        vae_scale = self.pipe.vae_scale_factor
        return self.pipe._unpack_latents(out, h * vae_scale, w * vae_scale, vae_scale).to(x.dtype)
