"""Stable Diffusion 3 / 3.5 (``StableDiffusion3Pipeline``): MMDiT on 16-channel VAE latents, CLIP-L + CLIP-G + T5,
real classifier-free guidance with a negative prompt, a static time shift (the scheduler's, 3.0)."""

from __future__ import annotations

import torch

from tafs.models.backbone import Cond
from tafs.models.pipeline_backbone import PipelineBackbone


class SD3Backbone(PipelineBackbone):
    pipeline_class = "StableDiffusion3Pipeline"
    text_components = ("text_encoder", "text_encoder_2", "text_encoder_3")
    default_guidance = 4.5  # Flow-GRPO trains and evaluates SD3.5-M with CFG 4.5 (REAL-MODELS.md §1)
    patch_multiple = 1

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative: Cond | None = None

    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.in_channels)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Cond:
        hidden, _, pooled, _ = self.pipe.encode_prompt(
            prompt=list(prompts), prompt_2=None, prompt_3=None, device=self.device, do_classifier_free_guidance=False,
            max_sequence_length=self.options.max_sequence_length)
        return self._text_out(hidden, pooled)

    def negative(self) -> Cond:
        """The negative prompt's conditioning, encoded once."""
        if self._negative is None:
            self._negative = self.encode([self.options.negative_prompt])
        return self._negative

    def _forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        t = sigma.to(torch.float32).expand(x.shape[0]) * 1000.0  # SD3 takes timesteps in [0, 1000]
        out = self.transformer(hidden_states=x.to(self.dtype), timestep=t.to(self.device),
                               encoder_hidden_states=cond.hidden.to(self.dtype),
                               pooled_projections=cond.pooled.to(self.dtype), return_dict=False)[0]
        return out.to(x.dtype)

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        """The guided velocity u + s (c - u), one batched pass for both (s <= 1: the conditional one)."""
        if self.guidance <= 1.0:
            return self._forward(x, sigma, cond)
        b = x.shape[0]
        both = Cond.cat([cond, self.negative().repeat_interleave(b)])
        v = self._forward(torch.cat([x, x]), torch.cat([sigma.expand(b), sigma.expand(b)]), both)
        v_c, v_u = v[:b], v[b:]
        if self.detach_uncond:  # the training pass as Flow-GRPO's (Backbone.uncond_detached)
            v_u = v_u.detach()
        return v_u + self.guidance * (v_c - v_u)
