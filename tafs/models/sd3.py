"""Stable Diffusion 3 / 3.5 (``StableDiffusion3Pipeline``): MMDiT on 16-channel VAE latents, CLIP-L + CLIP-G + T5,
real classifier-free guidance with a negative prompt, a static time shift (the scheduler's, 3.0).

What follows its reference implementations (flow_grpo at yifan123/flow_grpo@ac4c86e, diffusers 0.42.1):

=====================  ==============================================================  =================================
option                 reference (file:line)                                           ours (default)
=====================  ==============================================================  =================================
LoRA targets           flow_grpo scripts/train_sd3.py:419-428 (``attn.``: to_q, to_k,  ``SD3_TARGETS`` (the same eight;
                       to_v, to_out.0, add_q/k/v_proj, to_add_out)                     SD3.5-M's ``attn2`` not adapted)
LoRA rank / alpha      flow_grpo scripts/train_sd3.py:430-431 (r 32, alpha 64)         ``train.lora`` rank 32, alpha 64
LoRA init              flow_grpo scripts/train_sd3.py:432 (``init_lora_weights=        ``train.lora.init`` "default"
                       "gaussian"``)                                                   (peft's; "gaussian" available)
ODE noise levels       diffusers pipelines/stable_diffusion_3/                         ``scheduler_sigmas``: the same
                       ``pipeline_stable_diffusion_3.py``:1015-1041 (no sigmas);       call (``eval.ode_grid``
                       flow_grpo diffusers_patch/sd3_pipeline_with_logprob.py:121      "scheduler")
=====================  ==============================================================  =================================
"""

from __future__ import annotations

from typing import Any

import torch

from tafs.models.backbone import Cond
from tafs.models.lora import ATTENTION_TARGETS
from tafs.models.pipeline_backbone import PipelineBackbone

# flow_grpo's list: the projections of each block's first attention (``attn.``), so SD3.5-M's dual-attention blocks
# keep their second one (``attn2``) frozen; a bare suffix (``to_q``) would adapt both.
SD3_TARGETS = tuple(f"attn.{t}" for t in ATTENTION_TARGETS)


class SD3Backbone(PipelineBackbone):
    pipeline_class = "StableDiffusion3Pipeline"
    text_components = ("text_encoder", "text_encoder_2", "text_encoder_3")
    lora_targets = SD3_TARGETS
    default_guidance = 4.5  # Flow-GRPO trains and evaluates SD3.5-M with CFG 4.5 (docs/real-models.md §1)
    patch_multiple = 1

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative: Cond | None = None

    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.in_channels)

    def timestep_kwargs(self, nfe: int) -> dict[str, Any]:
        """``StableDiffusion3Pipeline.__call__`` (step 5): no sigmas, so ``FlowMatchEulerDiscreteScheduler`` takes
        linspace(1, sigma_min, nfe) shifted, then 0; mu (from ``calculate_shift`` at the latent's patch count) only
        when the scheduler shifts dynamically (SD3.5's does not: static shift 3)."""
        cfg = self.pipe.scheduler.config
        if not cfg.get("use_dynamic_shifting", None):
            return {"num_inference_steps": nfe}
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

        _, h, w = self.latent_shape
        patch = int(self.pipe.transformer.config.patch_size)
        mu = calculate_shift((h // patch) * (w // patch), cfg.get("base_image_seq_len", 256),
                             cfg.get("max_image_seq_len", 4096), cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.16))
        return {"num_inference_steps": nfe, "mu": mu}

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
