"""The activation memory of one training forward pass of an MMDiT (SD3) or Flux transformer with LoRA.

What autograd keeps for the backward pass, counted per token and per block from the block's structure, in units
of the model width ``w`` (one ``tokens x w`` tensor = 1). The base weights are frozen, so a frozen ``nn.Linear``
keeps only its weight (already counted), not its input; what stays is:

* a LoRA-wrapped linear keeps its input for ``lora_A``'s gradient (the q/k/v projections share one input: 1) and
  ``lora_B`` keeps the rank-``r`` intermediate (``r`` values a token per target);
* a LayerNorm keeps its input (1, plus a mean and an rstd a token);
* RMS qk-norm (SD3.5, Flux) keeps q and k before normalising (2);
* scaled-dot-product attention keeps q, k, v, its output (4) and a log-sum-exp per head (fp32): the memory-
  efficient kernels keep no ``tokens^2`` score matrix (the CPU kernel neither: the validation measures it);
* GELU keeps its input (``ff_mult`` = 4); the output projection with LoRA keeps the GELU output (4 more).

Per block and stream this is SD3: norm 1 + qkv 1 + (qk-norm 2) + attention 4 + out 1 + norm 1 + GELU 4
= 12 (+2); a dual-attention layer (SD3.5-M's first 13) adds a second attention on the image tokens, 6 (+2); the
last block's text stream stops after attention, 6 (+2). Flux (LoRA on attention and MLP) double block: 19 a
stream; single block: norm 1 + qkv 1 + qk-norm 2 + attention 4 + GELU 4 = 12 over all tokens. Then
``bytes = batch x sum over blocks of tokens x w x factor x value bytes`` (+ the rank and log-sum-exp terms).
The basis is the per-layer activation count of Korthikanti et al., "Reducing Activation Recomputation in Large
Transformer Models" (2022), re-derived for frozen weights, LoRA and fused attention; ``measure_saved_bytes``
checks it against what autograd really keeps (``torch.autograd.graph.saved_tensors_hooks``).

With gradient checkpointing (diffusers checkpoints each block) the forward keeps each block's inputs (image and
text tokens: 1 a block) and the backward re-runs one block at a time, so the peak is that plus one block's
activations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SD3_CLIP_TOKENS = 77  # SD3 joins the CLIP-L/G embeddings (77 tokens) and T5's max_sequence_length tokens
LSE_BYTES = 4  # attention's log-sum-exp is kept in fp32


@dataclass(frozen=True)
class Arch:
    """What the activation and FLOP models need of a transformer (from its config.json)."""

    family: str  # sd3 | flux
    width: int
    heads: int
    double_layers: int  # joint (MMDiT / Flux double-stream) blocks
    single_layers: int  # Flux single-stream blocks
    dual_layers: int  # SD3.5-M's blocks with a second image attention
    qk_norm: bool
    patch: int  # latent pixels a token covers, per side (SD3's patch_size; Flux packs 2 x 2)
    vae_factor: int  # pixels a latent pixel covers, per side
    ff_mult: int = 4

    def tokens(self, resolution: int, max_sequence_length: int) -> tuple[int, int]:
        """(image tokens, text tokens) of one sample."""
        side = resolution // self.vae_factor // self.patch
        text = max_sequence_length + (SD3_CLIP_TOKENS if self.family == "sd3" else 0)
        return side * side, text


def arch_from_configs(family: str, transformer: Mapping[str, Any], vae: Mapping[str, Any]) -> Arch:
    """The ``Arch`` of a diffusers SD3 / Flux transformer config and its VAE's config."""
    width = int(transformer["num_attention_heads"]) * int(transformer["attention_head_dim"])
    vae_factor = 2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1)
    if family == "sd3":
        return Arch("sd3", width, int(transformer["num_attention_heads"]), int(transformer["num_layers"]), 0,
                    len(transformer.get("dual_attention_layers") or ()), bool(transformer.get("qk_norm")),
                    int(transformer.get("patch_size", 2)), vae_factor)
    if family == "flux":
        return Arch("flux", width, int(transformer["num_attention_heads"]), int(transformer["num_layers"]),
                    int(transformer.get("num_single_layers", 0)), 0, True, 2 * int(transformer.get("patch_size", 1)),
                    vae_factor)
    raise ValueError(f"no activation model for family {family!r} (sd3 | flux)")


def _lora_targets(arch: Arch) -> tuple[int, int]:
    """LoRA targets of a joint block's stream and of a single block (tafs.models: attention; Flux also MLP)."""
    return (4, 0) if arch.family == "sd3" else (6, 3)


def block_values(arch: Arch, img: int, txt: int, rank: int) -> list[tuple[float, float]]:
    """Per sample and block: (values autograd keeps, bytes of the fp32 log-sum-exp)."""
    w, qk, r = arch.width, 2 * arch.qk_norm, rank
    per_stream, single_targets = _lora_targets(arch)
    lse = arch.heads * (img + txt) * LSE_BYTES
    out: list[tuple[float, float]] = []
    for i in range(arch.double_layers):
        if arch.family == "sd3":
            dual = i < arch.dual_layers
            v_img = (12 + qk + (6 + qk if dual else 0)) * img * w + per_stream * (1 + dual) * r * img
            last = i == arch.double_layers - 1  # context_pre_only: the text stream ends after attention
            v_txt = ((6 + qk) * w + 3 * r) * txt if last else ((12 + qk) * w + per_stream * r) * txt
            n_attn = 2 if dual else 1
        else:
            v_img, v_txt, n_attn = (19 * w + per_stream * r) * img, (19 * w + per_stream * r) * txt, 1
        out.append((v_img + v_txt + norm_stats(img + txt, 2), n_attn * lse))
    for _ in range(arch.single_layers):
        out.append(((12 * w + single_targets * r) * (img + txt) + norm_stats(img + txt, 1), lse))
    return out


def norm_stats(tokens: int, norms: int) -> float:
    """LayerNorm's mean and rstd, per token and norm."""
    return 2.0 * tokens * norms


def block_bytes(entry: tuple[float, float], value_bytes: int) -> float:
    values, lse = entry
    return values * value_bytes + lse


@dataclass(frozen=True)
class ActivationEstimate:
    full_bytes: float  # every block's saved activations (no checkpointing)
    checkpointed_bytes: float  # block inputs + one block re-run in the backward (gradient checkpointing)
    kept_with_checkpointing: float  # what the forward keeps with checkpointing (before the backward)

    def peak(self, checkpointing: bool) -> float:
        return self.checkpointed_bytes if checkpointing else self.full_bytes


def training_activations(arch: Arch, batch: int, resolution: int, max_sequence_length: int, rank: int,
                         value_bytes: int) -> ActivationEstimate:
    """Saved activations of one forward of ``batch`` samples (already doubled for classifier-free guidance)."""
    img, txt = arch.tokens(resolution, max_sequence_length)
    blocks = [block_bytes(e, value_bytes) for e in block_values(arch, img, txt, rank)]
    stem = img * arch.width * value_bytes  # the final norm keeps the image tokens
    boundaries = (arch.double_layers + arch.single_layers) * (img + txt) * arch.width * value_bytes
    rope = rope_bytes(arch, img + txt)
    kept = batch * (boundaries + stem) + rope
    return ActivationEstimate(batch * (sum(blocks) + stem) + rope, kept + batch * max(blocks, default=0.0), kept)


def rope_bytes(arch: Arch, tokens: int) -> float:
    """Flux's rotary cos / sin tables (fp32, one per pass, not per sample), kept by the rotation's product."""
    return 2.0 * tokens * (arch.width // arch.heads) * 4 if arch.family == "flux" else 0.0


def measure_saved_bytes(backbone: Any, batch: int, prompt: str = "a red cube") -> int:
    """Bytes of the tensors autograd keeps for one training forward (velocity, LoRA attached, train mode) of
    ``batch`` samples: every tensor packed by ``saved_tensors_hooks`` whose storage is not a parameter's, each
    storage once. This is what the backward needs; allocator slack and temporaries are not in it."""
    import torch

    cond = backbone.encode([prompt] * batch)
    denoiser = backbone.denoiser()
    params = {p.untyped_storage().data_ptr() for p in denoiser.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    x = torch.randn(batch, *backbone.latent_shape, generator=torch.Generator().manual_seed(0))
    denoiser.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        v = backbone.velocity(x, torch.tensor(0.5), cond)
        v.square().mean().backward()
    return sum(seen.values())
