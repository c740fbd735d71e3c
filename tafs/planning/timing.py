"""Seconds per iteration and GPU-hours from FLOPs, calibrated to the paper's Table 2.

A transformer forward of one sample costs ``F = 2 x P x T + 4 x T^2 x w x L`` FLOPs: every weight multiplies every
token once (a multiply-add = 2 FLOPs; P = the transformer's parameters, T = image + text tokens) and attention's
QK^T and AV products, each ``2 x T^2 x w`` per layer (w = width, L = blocks; SD3.5-M's dual-attention blocks add
``4 x T_img^2 x w``). An iteration of a method (``Method.nfe_accounting``: nfe_old sampling calls, nfe_theta
trained actions a sample) costs, for N = prompts_per_iter x group_size samples,

    N x c x F x (nfe_old + inner_epochs x nfe_theta x (3 + gradient_checkpointing + [beta > 0]))
    + N x scored steps x (VAE decode + 2 x P_reward x T_reward for each training reward)

(scored steps: the last N_adv one-step estimates, the only ones the advantages read: tafs.train.scoring)

with c = 2 under SD3's classifier-free guidance, a trained action's forward + backward = 3 forwards
(``tafs.train.cost.BACKWARD_FACTOR``), one forward more when gradient checkpointing re-runs it, and a reference
forward for the KL term. The VAE decode's FLOPs are counted on the meta device (``torch.utils.flop_counter``).

Seconds = FLOPs / (GPUs x peak dense bf16 FLOP/s x MFU). The achieved model-FLOP utilisation (MFU) is calibrated
so that the paper's TAFS-GRPO iteration (FLUX.1-dev at 512 px, 24 x 48 = 1,152 images, K = 3, on 8 H100) takes the
116 s of Table 2; a recorded GPU measurement (``tafs.planning.measured``) replaces it when there is one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from tafs.planning import catalogue
from tafs.planning.activations import Arch
from tafs.planning.model_sizes import component, meta_model, parameter_count

# Dense bf16 tensor-core peak per GPU, TFLOP/s (without 2:4 sparsity)
PEAK_TFLOPS: dict[str, tuple[float, str]] = {
    "h100": (989.4, "NVIDIA H100 SXM5 datasheet: BF16 Tensor Core 1,979 TFLOPS with sparsity = 989.4 dense"),
    "h200": (989.4, "NVIDIA H200 SXM datasheet: BF16 Tensor Core 1,979 TFLOPS with sparsity = 989.4 dense"),
    "a100": (312.0, "NVIDIA A100 SXM4 datasheet: BF16 Tensor Core 312 TFLOPS dense (624 with sparsity)"),
}
DEFAULT_GPU = "h100"  # the paper's cluster
PAPER_SECONDS = {"tafs_grpo": 116.0, "flow_grpo": 248.0, "dance_grpo": 646.0, "mix_grpo": 334.0}  # Table 2, 8 x H100
PAPER_REFERENCE = {  # the setting of Table 2's TAFS-GRPO timing (paper section 7.1)
    "repo": "black-forest-labs/FLUX.1-dev", "resolution": 512, "max_sequence_length": 128, "gpus": 8, "gpu": "h100",
    "train": {"prompts_per_iter": 24, "group_size": 48, "inner_epochs": 1, "beta": 0.0,
              "method": {"sampler": "annealed", "n_annealed": 3}, "advantage": {"rewards": {"pickscore": 1, "clip": 1}}},
    "gradient_checkpointing": True,
}


def forward_flops(arch: Arch, params: int, resolution: int, seq: int) -> float:
    """FLOPs of one transformer forward of one sample (the formula above)."""
    img, txt = arch.tokens(resolution, seq)
    tokens, layers = img + txt, arch.double_layers + arch.single_layers
    return 2.0 * params * tokens + 4.0 * tokens ** 2 * arch.width * layers + 4.0 * img ** 2 * arch.width * arch.dual_layers


@functools.cache
def decode_flops(vae: str, resolution: int, cache: str | None = None) -> float:
    """FLOPs of decoding one latent at ``resolution`` px, counted by running the decoder on meta tensors."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    comp = component(vae, cache)
    model = meta_model(comp)
    factor = 2 ** (len(comp.config.get("block_out_channels", [0] * 4)) - 1)
    z = torch.empty(1, int(comp.config.get("latent_channels", 16)), resolution // factor, resolution // factor,
                    device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.decode(z)
    return float(counter.get_total_flops())


def reward_flops(names: list[str], cache: str | None = None) -> float:
    """A scored image's reward forwards: 2 x parameters x (image + text tokens) of each training reward."""
    comps = {c for n in names for c in catalogue.REWARDS.get(n, ())}
    return sum(2.0 * parameter_count(c, cache) * catalogue.REWARD_INPUT_TOKENS for c in comps)


def nfe(method: dict[str, Any], n_adv: int | None = None) -> dict[str, int]:
    """The method's NFE accounting and ``scored``, the estimates an iteration decodes and rewards per sample: the
    last ``n_adv`` (tafs.train.scoring.scored_count; every scorable one when n_adv is None)."""
    from tafs.config import from_dict
    from tafs.train.methods import Method, MethodConfig
    from tafs.train.scoring import scored_count

    m = Method(from_dict(MethodConfig, method, "method"))
    scorable = m.num_scored_steps
    return {**m.nfe_accounting(), "scored": scored_count(scorable + 1, scorable if n_adv is None else n_adv)}


@dataclass(frozen=True)
class IterationFlops:
    sampling: float
    training: float
    scoring: float

    @property
    def total(self) -> float:
        return self.sampling + self.training + self.scoring


def iteration_flops(arch: Arch, gen: catalogue.Generator, train: dict, resolution: int, seq: int, cfg: int,
                    checkpointing: bool, cache: str | None = None) -> IterationFlops:
    """FLOPs of one GRPO iteration over all processes (the docstring's sum)."""
    counts = nfe(train.get("method") or {}, (train.get("advantage") or {}).get("n_adv", 3))
    n = train["prompts_per_iter"] * train["group_size"]
    matmul = parameter_count(gen.transformer, cache) - _buffers(gen.transformer, cache)
    f = cfg * forward_flops(arch, matmul, resolution, seq)
    per_action = 3 + int(checkpointing) + int(float(train.get("beta", 0.0)) > 0)
    rewards = list((train.get("advantage") or {}).get("rewards") or {})
    score = decode_flops(gen.vae, resolution, cache) + reward_flops(rewards, cache)
    return IterationFlops(n * f * counts["nfe_old"], n * f * train.get("inner_epochs", 1) * counts["nfe_theta"] *
                          per_action, n * counts["scored"] * score)


@functools.cache
def _buffers(name: str, cache: str | None) -> int:
    return sum(b.numel() for b in meta_model(component(name, cache)).buffers())


def peak_flops(gpu: str | None) -> tuple[float, str]:
    """Peak dense bf16 FLOP/s of a GPU type (config ``resources.<stage>.gpu_model``; default H100)."""
    key = next((k for k in PEAK_TFLOPS if k in (gpu or DEFAULT_GPU).lower()), DEFAULT_GPU)
    tflops, source = PEAK_TFLOPS[key]
    return tflops * 1e12, f"{key.upper()} {tflops} TFLOP/s ({source})"


@functools.cache
def paper_mfu(cache: str | None = None) -> float:
    """The model-FLOP utilisation at which the paper's TAFS-GRPO iteration takes Table 2's 116 s."""
    from tafs.planning.memory import arch_of

    ref = PAPER_REFERENCE
    gen = catalogue.GENERATORS[ref["repo"]]
    flops = iteration_flops(arch_of(gen, cache), gen, ref["train"], ref["resolution"], ref["max_sequence_length"], 1,
                            ref["gradient_checkpointing"], cache).total
    return flops / (PAPER_SECONDS["tafs_grpo"] * ref["gpus"] * peak_flops(ref["gpu"])[0])


def iteration_seconds(flops: float, gpus: int, gpu: str | None, mfu: float) -> float:
    return flops / (max(1, gpus) * peak_flops(gpu)[0] * mfu)
