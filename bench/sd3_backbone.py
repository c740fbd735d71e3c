"""A randomly initialised SD3.5-Medium-sized backbone for timing GRPO iterations on a GPU. Not a model.

``RandomSD3Backbone`` implements :class:`tafs.models.backbone.Backbone` around a
``diffusers.SD3Transformer2DModel`` with random weights, so the trainer runs its real code path
(peft LoRA, samplers, log-probs, the optimiser) at the real model's size:

- no text encoders: every prompt maps to fixed random embeddings (CLIP 77 + T5 256 = 333 tokens of
  width 4096, and a pooled 2048 vector for the real size), seeded from a stable hash of its text;
- no VAE: ``decode`` squashes three latent channels through a sigmoid and resizes them to 32 px so
  that the toy-world reward can run. Its value is meaningless; only the timing and memory matter.

The transformer runs in bf16 on CUDA and fp32 on the CPU; the samplers' own arithmetic (means,
log-probs) stays in the latents' fp32. The helpers below count the training FLOPs and look up a
GPU's peak throughput for the model FLOP utilisation (MFU).
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from tafs.models.backbone import Backbone, Cond
from tafs.models.sd3 import SD3_TARGETS


@dataclass(frozen=True)
class SD3BenchConfig:
    """Transformer hyper-parameters plus the sizes of the fake text conditions and latents."""

    name: str
    sample_size: int
    patch_size: int
    in_channels: int
    num_layers: int
    attention_head_dim: int
    num_attention_heads: int
    joint_attention_dim: int
    caption_projection_dim: int
    pooled_projection_dim: int
    pos_embed_max_size: int
    dual_attention_layers: tuple[int, ...]
    qk_norm: str | None
    text_tokens: int  # length of the (fake) joint text sequence
    latent_size: int  # latent height = width the benchmark samples at
    image_size: int = 32  # what ``decode`` returns (the toy-world reward's resolution)

    def transformer_kwargs(self) -> dict:
        return {
            "sample_size": self.sample_size, "patch_size": self.patch_size, "in_channels": self.in_channels,
            "out_channels": self.in_channels, "num_layers": self.num_layers,
            "attention_head_dim": self.attention_head_dim, "num_attention_heads": self.num_attention_heads,
            "joint_attention_dim": self.joint_attention_dim, "caption_projection_dim": self.caption_projection_dim,
            "pooled_projection_dim": self.pooled_projection_dim, "pos_embed_max_size": self.pos_embed_max_size,
            "dual_attention_layers": self.dual_attention_layers, "qk_norm": self.qk_norm,
        }


def sd3_medium_config() -> SD3BenchConfig:
    """stabilityai/stable-diffusion-3.5-medium's transformer, on 512 px latents (64 x 64 x 16).

    Verified against diffusers 0.42 (``loaders/single_file_utils.py``, ``transformer_sd3.py``) and a
    copy of the model's transformer/config.json: the SD3.5-Medium checkpoint is detected by its
    pos_embed of 147456 = 384^2 positions (pos_embed_max_size 384; SD3-Medium has 192^2) and an adaLN
    bias of 9216 = 6 x 1536 (24 heads x 64 = caption_projection_dim 1536); 24 layers, dual attention
    ("attn2") in layers 0-12, qk_norm "rms_norm", joint_attention_dim 4096, pooled 2048, patch 2,
    16 channels. The released config says sample_size 128 (1024 px): kept here, since it only sets the
    scale of the random sin-cos position table; the 64 x 64 input is cropped from the 384 x 384 grid,
    so the compute is that of a 512 px latent (1024 image tokens + 333 text tokens).
    """
    return SD3BenchConfig(
        name="sd3-medium", sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
        num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
        pos_embed_max_size=384, dual_attention_layers=tuple(range(13)), qk_norm="rms_norm",
        text_tokens=77 + 256, latent_size=64)


def sd3_tiny_config() -> SD3BenchConfig:
    """The same architecture features (dual attention, RMS qk-norm, 16 channels) at test size."""
    return SD3BenchConfig(
        name="sd3-tiny", sample_size=16, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16, pooled_projection_dim=16,
        pos_embed_max_size=16, dual_attention_layers=(0,), qk_norm="rms_norm", text_tokens=7, latent_size=16)


def bench_config(name: str) -> SD3BenchConfig:
    factories = {"sd3-medium": sd3_medium_config, "sd3-tiny": sd3_tiny_config}
    if name not in factories:
        raise ValueError(f"unknown SD3 benchmark size {name!r}; one of {sorted(factories)}")
    return factories[name]()


def prompt_seed(text: str) -> int:
    """A seed that depends only on the text (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


class RandomSD3Backbone(Backbone):
    lora_targets = SD3_TARGETS  # what SD3.5-M trains: its dual-attention blocks' attn2 stays frozen

    def __init__(self, transformer: torch.nn.Module, spec: SD3BenchConfig, dtype: torch.dtype):
        self.transformer = transformer  # set_denoiser swaps in the peft / DDP wrapped module
        self.spec = spec
        self.dtype = dtype
        self.device = next(transformer.parameters()).device

    def to(self, device: torch.device | str) -> "RandomSD3Backbone":
        self.device = torch.device(device)
        self.transformer.to(self.device)
        return self

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.spec.in_channels, self.spec.latent_size, self.spec.latent_size)

    def denoiser(self) -> torch.nn.Module:
        return self.transformer

    def set_denoiser(self, module: torch.nn.Module) -> None:
        self.transformer = module

    def frozen_modules(self) -> list[torch.nn.Module]:
        return []  # random text embeddings, no VAE

    def encode(self, prompts: list[str]) -> Cond:
        hidden, pooled = [], []
        for text in prompts:
            gen = torch.Generator().manual_seed(prompt_seed(text))
            hidden.append(torch.randn((self.spec.text_tokens, self.spec.joint_attention_dim), generator=gen))
            pooled.append(torch.randn((self.spec.pooled_projection_dim,), generator=gen))
        return Cond(torch.stack(hidden).to(self.device, self.dtype), torch.stack(pooled).to(self.device, self.dtype))

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        t = sigma.float().expand(x.shape[0]) * 1000.0  # SD3 takes timesteps in [0, 1000]
        out = self.transformer(hidden_states=x.to(self.dtype), encoder_hidden_states=cond.hidden.to(self.dtype),
                               pooled_projections=cond.pooled.to(self.dtype), timestep=t, return_dict=False)[0]
        return out.to(x.dtype)

    def decode_batch(self, x0: torch.Tensor) -> torch.Tensor:
        """Three latent channels -> [0, 1] images of ``image_size`` px: only so that a reward can run."""
        img = torch.sigmoid(torch.nan_to_num(x0[:, :3].float()))
        return F.interpolate(img, size=(self.spec.image_size, self.spec.image_size), mode="area")

    def save(self, path: str) -> None:
        raise NotImplementedError("RandomSD3Backbone has random weights and exists only for benchmarks")


def build_random_sd3(spec: SD3BenchConfig, device: torch.device, dtype: torch.dtype, seed: int = 0,
                     gradient_checkpointing: bool = False) -> RandomSD3Backbone:
    """Initialise the transformer directly on ``device`` (a 2.5 B-parameter CPU init takes minutes)."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    with torch.device(device):
        model = SD3Transformer2DModel(**spec.transformer_kwargs())
    model.to(device)
    if dtype != torch.float32:  # (diffusers logs a harmless note about fp32-kept modules: SD3 has none)
        model.to(dtype)
    model.eval().requires_grad_(False)
    if gradient_checkpointing:
        model.enable_gradient_checkpointing()
    return RandomSD3Backbone(model, spec, dtype)


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


# -- FLOPs and MFU ----------------------------------------------------------------------------------

def peak_bf16_flops(gpu_name: str) -> float | None:
    """Dense (no sparsity) bf16 tensor-core peak of known GPUs, from the vendors' data sheets."""
    name = gpu_name.lower()
    table = [  # (substrings that must all occur, FLOP/s); first match wins, so the specific ones first
        (("h100", "pcie"), 756e12),
        (("h100", "nvl"), 835e12),
        (("h100",), 989e12),  # SXM ("NVIDIA H100 80GB HBM3")
        (("h200",), 989e12),  # H200 and GH200
        (("a100",), 312e12),
    ]
    for keys, flops in table:
        if all(k in name for k in keys):
            return flops
    return None


def _sd3_modules(module: torch.nn.Module) -> list[torch.nn.Module]:
    from diffusers import SD3Transformer2DModel

    return [m for m in module.modules() if isinstance(m, SD3Transformer2DModel)]


@contextlib.contextmanager
def gradient_checkpointing_off(module: torch.nn.Module) -> Iterator[None]:
    """Model FLOPs exclude the forward that checkpointing recomputes in the backward pass."""
    mods = _sd3_modules(module)
    flags = [m.gradient_checkpointing for m in mods]
    try:
        for m in mods:
            m.gradient_checkpointing = False
        yield
    finally:
        for m, flag in zip(mods, flags):
            m.gradient_checkpointing = flag


def train_pass_flops(trainer) -> int:
    """FLOPs of one forward + backward of the denoiser on one minibatch, counted (not timed).

    This mirrors one action's loss pass in ``Trainer.optimise``; the LoRA base weights are frozen, so
    the backward computes input gradients (plus the small LoRA weight gradients) only. On CUDA the
    flash / memory-efficient / cuDNN attention kernels are counted; the CPU's SDPA kernel is not, so
    CPU counts cover the linear layers only (enough for the CPU test of this code path).
    """
    from torch.utils.flop_counter import FlopCounterMode

    cfg, bb = trainer.cfg, trainer.backbone
    n = cfg.prompts_per_iter * cfg.group_size
    size = -(-n // cfg.minibatches)  # the largest minibatch torch.chunk makes
    x = torch.randn((size, *bb.latent_shape), device=bb.device)
    sigma = torch.full((size,), 0.5, device=bb.device)
    cond = trainer.encode(["a red square and a blue ring"] * size)
    bb.denoiser().train()
    with gradient_checkpointing_off(bb.denoiser()), FlopCounterMode(display=False) as counter:
        bb.predict_x0(x, sigma, cond).float().pow(2).mean().backward()
    trainer.opt.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def train_passes_per_iteration(trainer) -> int:
    """Forward + backward passes of the denoiser in one ``optimise`` call (the reference-policy forward
    that beta > 0 adds is not counted)."""
    cfg = trainer.cfg
    return cfg.inner_epochs * cfg.minibatches * trainer.method.nfe_accounting()["nfe_theta"]
