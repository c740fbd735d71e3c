"""Peak GPU memory of a training or an evaluation job, by part, from the real models' configs.

Peak = resident weights + LoRA training state + the largest of the phases that do not overlap (sampling with no
grad, the training forward + backward, decoding for the rewards). Everything resident stays on the GPU all job
long: the transformer, text encoders and VAE at their precisions (config ``model.dtype`` / ``text_dtype`` /
``vae_dtype``), the training rewards (training) or every metric's reward model (evaluation, as it loads them:
all at once). LoRA parameters are fp32 in peft: parameter, gradient and AdamW's two moments = 16 bytes each
(no fp32 master copy is needed), plus a DDP gradient bucket (4 bytes) with more than one process.

Sampling (no grad) holds, per sample in flight, about one block's working set: the residual stream, q/k/v and the
attention output and the MLP hidden (``4 + ff_mult`` token x width tensors) plus the trajectory (every state,
action and clean estimate, fp32 latents). Decoding holds, per image of a chunk, three feature maps of the VAE
decoder's largest layer (256 channels at the full resolution, at the VAE's precision). Both are rough working-set
models, unlike the training activations (``tafs.planning.activations``, validated on the tiny pipelines).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tafs.planning import catalogue
from tafs.planning.activations import Arch, arch_from_configs, training_activations
from tafs.planning.model_sizes import component, lora_parameter_count, parameter_count

GB = 1e9
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
LORA_STATE_BYTES = 16  # fp32 parameter + gradient + AdamW exp_avg + exp_avg_sq
DDP_BUCKET_BYTES = 4
FLUX_FF_TARGETS = ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")
ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
DECODER_CHANNELS_AT_FULL_RES = 256  # the SD3 / Flux VAE's decoder upsamples 256 channels to the full size


@dataclass
class Part:
    what: str
    gb: float


@dataclass
class JobMemory:
    """One job's estimate: its parts (summed for the peak), alternatives and what to change if it does not fit."""

    job: str
    parts: list[Part] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)  # the settings that shrink the biggest part, in order

    @property
    def peak_gb(self) -> float:
        return round(sum(p.gb for p in self.parts), 1)

    def warning(self, gpu_gb: float | None) -> str | None:
        if gpu_gb is None or self.peak_gb <= gpu_gb:
            return None
        return (f"{self.job}: ~{self.peak_gb} GB estimated > the GPU's {gpu_gb} GB (resources.<stage>.gpu_mem_gb); "
                f"change {', '.join(self.settings) or 'a bigger GPU'}")


def weights(gen: catalogue.Generator, dtypes: dict[str, str], cache: str | None) -> list[Part]:
    """The generator's resident weights: transformer, text encoders, VAE at their precisions."""
    parts = [Part(f"transformer {dtypes['transformer']}",
                  parameter_count(gen.transformer, cache) * BYTES[dtypes["transformer"]] / GB)]
    text = sum(parameter_count(t, cache) for t in gen.text)
    parts.append(Part(f"text encoders {dtypes['text']}", text * BYTES[dtypes["text"]] / GB))
    parts.append(Part(f"VAE {dtypes['vae']}", parameter_count(gen.vae, cache) * BYTES[dtypes["vae"]] / GB))
    return parts


def reward_weights(names: list[str], reward_models: dict[str, Any], cache: str | None) -> Part:
    """Resident reward models (their ``dtype`` option, fp32 by default); a network two rewards share counts once."""
    comps = {c: BYTES[(reward_models.get(n) or {}).get("dtype", "fp32")]
             for n in names for c in catalogue.REWARDS.get(n, ())}
    gb = sum(parameter_count(c, cache) * b for c, b in comps.items()) / GB
    return Part(f"rewards {'+'.join(names)}", gb)


def _placed(parts: list[Part], offload: str | None) -> list[Part]:
    """The generator's weights on the GPU at once under diffusers' CPU offload (None: all of them)."""
    if offload == "model":
        big = max(parts, key=lambda p: p.gb)
        return [Part(f"{big.what} (model offload: one component at a time)", big.gb)]
    if offload == "sequential":
        return [Part("weights streamed layer by layer (sequential offload)", 0.0)]
    return parts


def arch_of(gen: catalogue.Generator, cache: str | None) -> Arch | None:
    if gen.family not in ("sd3", "flux"):
        return None
    return arch_from_configs(gen.family, component(gen.transformer, cache).config, component(gen.vae, cache).config)


def cfg_factor(gen: catalogue.Generator, guidance: float | None) -> int:
    """SD3 runs real classifier-free guidance (2 passes a call) when its scale > 1 (default 4.5); Flux embeds it."""
    return 2 if gen.family == "sd3" and (4.5 if guidance is None else guidance) > 1 else 1


def sampling_gb(arch: Arch, samples: int, resolution: int, seq: int, value_bytes: int, steps: int) -> float:
    """No-grad working set of ``samples`` forwards in flight plus their fp32 trajectories (``steps`` actions)."""
    img, txt = arch.tokens(resolution, seq)
    working = samples * (img + txt) * arch.width * (4 + arch.ff_mult) * value_bytes
    latent = 16 * (resolution // arch.vae_factor) ** 2 * 4
    return (working + samples * (3 * steps + 1) * latent) / GB


def decode_gb(images: int, resolution: int, vae_dtype: str) -> float:
    return images * 3 * DECODER_CHANNELS_AT_FULL_RES * resolution ** 2 * BYTES[vae_dtype] / GB


def lora_targets(gen: catalogue.Generator, configured: Any) -> tuple[str, ...]:
    if configured:
        return tuple(configured)
    return ATTENTION_TARGETS + (FLUX_FF_TARGETS if gen.family == "flux" else ())


def train_memory(job: str, config: dict, train: dict, gpus: int, cache: str | None) -> JobMemory | None:
    """One training process's peak (every process of a DDP job holds the same)."""
    gen = catalogue.generator(catalogue.hub_repo(config["model"].get("pretrained")))
    if gen is None or (arch := arch_of(gen, cache)) is None:
        return None
    m = config["model"]
    dtypes = {"transformer": m.get("dtype", "fp32"), "text": m.get("text_dtype", "fp32"), "vae": m.get("vae_dtype", "fp32")}
    res, seq = int(m.get("resolution") or 1024), int(m.get("max_sequence_length", 128))
    rank = int(train.get("lora", {}).get("rank", 32))
    out = JobMemory(job, weights(gen, dtypes, cache))
    out.parts.append(reward_weights(list(train["advantage"]["rewards"]), config.get("reward_models") or {}, cache))
    lora = lora_parameter_count(gen.transformer, lora_targets(gen, train.get("lora", {}).get("targets")), rank, cache)
    state = LORA_STATE_BYTES + (DDP_BUCKET_BYTES if gpus > 1 else 0)
    out.parts.append(Part(f"LoRA {lora / 1e6:.0f} M x {state} B",
                          lora * state / GB))
    phases = _train_phases(config, train, gen, arch, gpus, dtypes, res, seq, rank)
    name, gb = max(phases.items(), key=lambda kv: kv[1])
    out.parts.append(Part(name.split(" (")[0], gb))
    out.notes = [f"{k}: {v:.1f} GB" for k, v in phases.items()]
    out.settings = _advice(name)
    return out


def _train_phases(config: dict, train: dict, gen: catalogue.Generator, arch: Arch, gpus: int, dtypes: dict,
                  res: int, seq: int, rank: int) -> dict[str, float]:
    """GB of each phase of an iteration on one process: training activations (with and without gradient
    checkpointing), sampling, decoding."""
    m, cfg = config["model"], cfg_factor(gen, config["model"].get("guidance_scale"))
    share = train["prompts_per_iter"] * train["group_size"] / max(1, gpus)
    micro = int(train.get("micro_batch") or math.ceil(share / train.get("minibatches", 2)))
    vb = 2 if dtypes["transformer"] != "fp32" or train.get("mixed_precision", "no") != "no" else 4
    act = training_activations(arch, micro * cfg, res, seq, rank, vb)
    ckpt = bool(m.get("gradient_checkpointing"))
    steps = _actions(train.get("method", {}))
    chunk = int(train.get("sample_chunk") or share)
    scored = int(share * steps)
    other = f"{act.peak(not ckpt) / GB:.1f} GB {'without' if ckpt else 'with'}"
    return {
        f"training pass, micro-batch {micro}{' x 2 (CFG)' if cfg == 2 else ''}, "
        f"{'with' if ckpt else 'without'} gradient checkpointing ({other})": act.peak(ckpt) / GB,
        f"sampling {chunk} at a time": sampling_gb(arch, chunk * cfg, res, seq, vb, steps),
        f"decoding {train.get('decode_chunk') or scored} at a time": decode_gb(
            int(train.get("decode_chunk") or scored), res, dtypes["vae"]),
    }


def _actions(method: dict) -> int:
    """Actions of a trajectory (its 3 T + 1 latents: states, actions, estimates; at most T scored estimates):
    the sampler's ``num_actions``. Imported here: the samplers import torch."""
    from tafs.config import from_dict
    from tafs.train.methods import Method, MethodConfig

    return Method(from_dict(MethodConfig, method, "method")).num_actions


def _advice(phase: str) -> list[str]:
    if phase.startswith("training"):
        return ["train.micro_batch", "model.gradient_checkpointing: true", "model.dtype: bf16", "a bigger GPU"]
    if phase.startswith("sampling"):
        return ["train.sample_chunk", "model.dtype: bf16", "a bigger GPU"]
    return ["train.decode_chunk", "model.vae_dtype: bf16", "a bigger GPU"]


def eval_memory(job: str, repo: str | None, dtypes: dict[str, str], resolution: int, seq: int,
                guidance: float | None, batch: int, decode_chunk: int, metrics: list[str],
                reward_models: dict[str, Any], cache: str | None, one_reward: bool = False,
                offload: str | None = None) -> JobMemory | None:
    """An evaluation job: the generator and every metric's reward model resident, sampling a batch, decoding.

    ``one_reward`` (``eval.rewards_after_generation``): the reward models are built one at a time after sampling,
    so the largest one counts instead of their sum. ``offload`` (a baseline's ``offload``): "model" keeps one
    component of the pipeline on the GPU at a time (the largest counts), "sequential" one layer (weights not
    counted; diffusers streams them)."""
    gen = catalogue.generator(repo)
    if gen is None:
        return None
    out = JobMemory(job, _placed(weights(gen, dtypes, cache), offload))
    if one_reward and metrics:
        out.parts.append(max((reward_weights([n], reward_models, cache) for n in metrics), key=lambda p: p.gb))
        out.parts[-1].what = f"largest reward, one at a time ({out.parts[-1].what.removeprefix('rewards ')})"
    else:
        out.parts.append(reward_weights(metrics, reward_models, cache))
    resident = ["the dtype of its models"] + (
        [] if one_reward else ["eval.rewards_after_generation: true (one reward model at a time)"]) + (
        [] if offload else ["baselines.<name>.offload: model (a baseline's pipeline, one component at a time)"]) + (
        ["reward_models.unifiedreward: url (the 7B judge served elsewhere)"] if "unifiedreward" in metrics else [])
    arch = arch_of(gen, cache)
    if arch is None:
        out.notes.append(f"sampling activations not modelled for {gen.family}: weights only")
        out.settings = resident + ["a bigger GPU"]
        return out
    vb = BYTES[dtypes["transformer"]]
    phases = {f"sampling {batch} at a time": sampling_gb(arch, batch * cfg_factor(gen, guidance), resolution, seq, vb, 0),
              f"decoding {decode_chunk or batch} at a time": decode_gb(decode_chunk or batch, resolution, dtypes["vae"])}
    name, gb = max(phases.items(), key=lambda kv: kv[1])
    out.parts.append(Part(name.split(" (")[0], gb))
    out.notes = [f"{k}: {v:.1f} GB" for k, v in phases.items()]
    out.settings = (["eval.batch_size"] if name.startswith("sampling") else ["eval.decode_chunk", "model.vae_dtype: bf16"]) \
        + resident + ["a bigger GPU"]
    return out
