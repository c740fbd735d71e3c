"""Evaluation-only models (Table 1's step-distilled and pre-trained baselines) through their own diffusers pipeline.

Each baseline is sampled by its pipeline's ``__call__`` (its scheduler, steps, guidance), not re-implemented:
any folder ``DiffusionPipeline.from_pretrained`` loads (FLUX.1-schnell, SD3.5-Large-Turbo, SANA-Sprint, ...),
optionally with a LoRA fused at its scale (Hyper-Flux, Flux-Turbo-Alpha on FLUX.1-dev). The images are scored
by the task's metrics exactly as our own models' are (``tafs.evaluate``), into ``eval/baselines/<name>/pipeline``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from tafs.eval_shards import ShardJob
from tafs.evaluate import EvalConfig, sweep_with
from tafs.models.options import DTYPES, torch_dtype
from tafs.prompts import Prompt

SAMPLER = "pipeline"
OFFLOADS = (None, "model", "sequential")


@dataclass(frozen=True)
class BaselineConfig:
    guidance_scale: float | None = None  # None: the pipeline's own default
    resolution: int | None = None  # px; None: the pipeline's default size
    dtype: str = "fp32"  # every component's precision (fp32 | bf16 | fp16)
    pipeline_kwargs: dict = field(default_factory=dict)  # more arguments of the pipeline call
    lora_weight_name: str | None = None  # the LoRA file inside the lora folder
    lora_scale: float = 1.0  # fused at this scale (Hyper-Flux: 0.125)
    # Components the pipeline folder lacks (HiDream's Llama text encoder): name -> {path, class, kwargs};
    # ``class`` is "package.Class" with a ``from_pretrained`` (e.g. transformers.LlamaForCausalLM).
    components: dict = field(default_factory=dict)
    # Diffusers' CPU offload: "model" (enable_model_cpu_offload: one component on the GPU at a time) or
    # "sequential" (enable_sequential_cpu_offload: layer by layer, least memory, slowest); None: all on the device.
    offload: str | None = None

    def __post_init__(self) -> None:
        if self.offload not in OFFLOADS:
            raise ValueError(f"baselines.<name>.offload must be one of {OFFLOADS}, got {self.offload!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"baselines.<name>.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")


def load_pipeline(path: str | Path, cfg: BaselineConfig, lora: str | Path | None = None,
                  device: str | torch.device | None = None) -> Any:
    """Any diffusers pipeline folder, with a LoRA fused at ``cfg.lora_scale`` when given."""
    from diffusers import DiffusionPipeline

    from tafs.models.loading import default_device

    extra = {name: load_component(spec, cfg.dtype, f"baselines components.{name}") for name, spec in cfg.components.items()}
    pipe = DiffusionPipeline.from_pretrained(str(path), dtype=torch_dtype(cfg.dtype), **extra)
    if lora is not None:
        kwargs = {"weight_name": cfg.lora_weight_name} if cfg.lora_weight_name else {}
        pipe.load_lora_weights(str(lora), **kwargs)
        pipe.fuse_lora(lora_scale=cfg.lora_scale)
    pipe.set_progress_bar_config(disable=True)
    return place(pipe, cfg.offload, device or default_device())


def place(pipe: Any, offload: str | None, device: str | torch.device) -> Any:
    """The pipeline on ``device``, or offloaded to the CPU with diffusers' hooks moving it onto ``device``
    as it runs (they need accelerate; the pipeline must not be moved with ``.to`` afterwards)."""
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe = pipe.to(device)
    return pipe


def load_component(spec: dict, dtype: str, where: str) -> Any:
    """One extra pipeline component: ``Class.from_pretrained(path, **kwargs)`` in the baseline's precision."""
    import importlib

    module, _, cls = str(spec.get("class", "")).rpartition(".")
    if not module or "path" not in spec:
        raise ValueError(f"{where}: needs `path` and `class` (package.Class), got {spec!r}")
    loader = getattr(importlib.import_module(module), cls)
    return loader.from_pretrained(spec["path"], **{"dtype": torch_dtype(dtype), **spec.get("kwargs", {})}) \
        if hasattr(loader, "config_class") else loader.from_pretrained(spec["path"], **spec.get("kwargs", {}))


def pipeline_images(pipe: Any, texts: Sequence[str], cfg: EvalConfig, base: BaselineConfig,
                    progress: bool = True, span: range | None = None) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1] from the pipeline's own call at ``cfg.nfe`` steps for the texts (those in
    ``span`` only, when given); image i is seeded by ``cfg.seed + i`` whatever the batch size or span."""
    kwargs: dict[str, Any] = dict(base.pipeline_kwargs)
    if base.guidance_scale is not None:
        kwargs["guidance_scale"] = base.guidance_scale
    if base.resolution is not None:
        kwargs.update(height=base.resolution, width=base.resolution)
    out = []
    span = range(len(texts)) if span is None else span
    starts = range(span.start, span.stop, cfg.batch_size)
    for i in tqdm(starts, desc=f"pipeline@{cfg.nfe}", disable=not progress, mininterval=5):
        batch = list(texts[i:min(i + cfg.batch_size, span.stop)])
        gens = [torch.Generator().manual_seed(cfg.seed + i + j) for j in range(len(batch))]
        with torch.no_grad():
            images = pipe(prompt=batch, num_inference_steps=cfg.nfe, generator=gens, output_type="pt", **kwargs).images
        out.append(images.float().clamp(0, 1).cpu())
    return torch.cat(out)


def sweep_pipeline(pipe: Any, prompts: Sequence[Prompt], cfg: EvalConfig, base: BaselineConfig, nfes: list[int],
                   name: str, out_root: Path, progress: bool = True,
                   info: dict[str, str] | None = None, job: ShardJob | None = None) -> list[dict]:
    from dataclasses import replace

    cfg = replace(cfg, sampler=SAMPLER)
    return sweep_with(lambda texts, c, p, span: pipeline_images(pipe, texts, c, base, p, span), prompts, cfg, nfes, name,
                      out_root, progress, info, job)
