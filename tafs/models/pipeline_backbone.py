"""A backbone built from the components of a diffusers pipeline folder (SD3, Flux): what the families share.

The pipeline object is kept for its own ``encode_prompt`` (tokenisers, the text encoders, their pooling)
and its LoRA saver; the denoiser, the VAE and the schedule are used directly. Text encoders and the VAE are
frozen and run without gradients; the transformer runs in its configured precision while latents,
log-probabilities and rewards stay in fp32.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch

from tafs.models.backbone import Backbone, Cond
from tafs.models.options import ModelOptions


class PipelineBackbone(Backbone):
    pipeline_class: ClassVar[str]  # the diffusers pipeline class of model_index.json
    text_components: ClassVar[tuple[str, ...]]  # text encoders the pipeline owns
    default_guidance: ClassVar[float]

    def __init__(self, pipe: Any, options: ModelOptions, device: torch.device | str = "cpu"):
        self.pipe = pipe
        self.options = options
        self.transformer = pipe.transformer
        self.vae = pipe.vae
        self.device = torch.device(device)
        self.resolution = options.resolution or self.native_resolution()
        factor = self.pipe.vae_scale_factor * self.patch_multiple
        if self.resolution % factor:
            raise ValueError(f"model.resolution {self.resolution} px must be a multiple of {factor} for "
                             f"{self.pipeline_class} (VAE factor x patch)")
        self.guidance = self.default_guidance if options.guidance_scale is None else float(options.guidance_scale)
        if options.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        self.to(device)

    # -- loading ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu", options: ModelOptions | None = None):
        import diffusers
        import transformers

        options = options or ModelOptions()
        pipe_cls = getattr(diffusers, cls.pipeline_class)
        dtypes = {"transformer": options.torch_dtype("transformer"), "vae": options.torch_dtype("vae"),
                  "default": options.torch_dtype("text")}
        diffusers.utils.logging.disable_progress_bar()  # job logs: one line per stage, not per component
        transformers.utils.logging.disable_progress_bar()
        pipe = pipe_cls.from_pretrained(str(path), dtype=dtypes)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, options, device)

    # -- the interface ----------------------------------------------------------------------------
    patch_multiple: ClassVar[int] = 1  # the latent side must also divide by this (Flux packs 2x2)

    def native_resolution(self) -> int:
        return int(self.transformer.config.sample_size) * self.pipe.vae_scale_factor

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        side = self.resolution // self.pipe.vae_scale_factor
        return (self.latent_channels, side, side)

    def denoiser(self) -> torch.nn.Module:
        return self.transformer

    def set_denoiser(self, module: torch.nn.Module) -> None:
        self.transformer = module

    def frozen_modules(self) -> list[torch.nn.Module]:
        return [getattr(self.pipe, n) for n in self.text_components if getattr(self.pipe, n, None) is not None] + [
            self.vae]

    def to(self, device: torch.device | str) -> "PipelineBackbone":
        self.device = torch.device(device)
        for module in (self.transformer, *self.frozen_modules()):
            module.to(self.device)
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.options.torch_dtype("transformer")

    @torch.no_grad()
    def decode_batch(self, x0: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [0, 1] as the pipeline decodes them (scaling and shift factor of the VAE)."""
        cfg = self.vae.config
        z = x0.to(self.device, self.vae.dtype) / cfg.scaling_factor + (cfg.shift_factor or 0.0)
        image = self.vae.decode(z, return_dict=False)[0]
        return (image.float() / 2 + 0.5).clamp(0, 1)

    @property
    def default_shift(self) -> float:
        return float(self.pipe.scheduler.config.get("shift", 1.0))

    def scheduler_sigmas(self, nfe: int) -> torch.Tensor:
        """What the pipeline's own call at ``num_inference_steps=nfe`` samples with: a fresh copy of its scheduler,
        set the way the pipeline sets it (``timestep_kwargs``), its ``sigmas`` (float32 there) as float64."""
        if nfe < 1:
            raise ValueError(f"nfe must be >= 1, got {nfe}")
        scheduler = type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)
        scheduler.set_timesteps(**self.timestep_kwargs(nfe))
        sigmas = scheduler.sigmas.detach().to("cpu", torch.float64)
        if len(sigmas) != nfe + 1 or float(sigmas[0]) > 1.0 or float(sigmas[-1]) != 0.0:
            raise ValueError(f"{type(scheduler).__name__} at {nfe} steps gives {sigmas.tolist()}, not nfe + 1 noise "
                             "levels from at most 1 down to 0; the Euler ODE cannot follow it")
        return sigmas

    @abstractmethod
    def timestep_kwargs(self, nfe: int) -> dict[str, Any]:
        """The keyword arguments the pipeline's ``__call__`` hands ``scheduler.set_timesteps`` at ``nfe`` steps."""

    def save(self, path: str | Path) -> None:
        self.pipe.save_pretrained(str(path))

    def save_adapter(self, path: str | Path) -> None:
        """The peft adapter, plus ``pytorch_lora_weights.safetensors`` so that diffusers'
        ``pipe.load_lora_weights(path)`` loads it (rank and alpha travel as metadata)."""
        from peft import get_peft_model_state_dict

        super().save_adapter(path)
        module = self.denoiser()
        module = getattr(module, "module", module)
        config = module.peft_config["default"].to_dict()
        config = json.loads(json.dumps(config, default=lambda o: sorted(o) if isinstance(o, set) else str(o)))
        # peft's PeftModel names its weights base_model.model.<module>...; diffusers wants <module>...
        layers = {k.removeprefix("base_model.model."): v for k, v in get_peft_model_state_dict(module).items()}
        type(self.pipe).save_lora_weights(str(path), transformer_lora_layers=layers,
                                          transformer_lora_adapter_metadata=config, safe_serialization=True)

    def _text_out(self, hidden: torch.Tensor, pooled: torch.Tensor) -> Cond:
        return Cond(hidden.to(self.device), pooled.to(self.device))
