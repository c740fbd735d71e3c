"""What a training run *is* (its checkpoint identity) versus how a job runs it (runtime settings).

The identity is everything that changes the trained adapter: method, rewards (and their models, as the config
names them), seed, data, model, optimiser, schedule, precision. Runtime settings only change memory, speed, where
files are, or how often progress is saved or looked at: ``micro_batch``, ``sample_chunk``, ``decode_chunk``,
``text_cache``, ``checkpoint_every``, ``max_runtime_min``, ``snapshot_every``, ``snapshot_keep_last``, the
in-training evaluation (``eval_every``, ``eval_prompts``, ``eval_job``: it consumes none of the training's
randomness), a reward's ``device``/``batch_size``/endpoint settings, the folders of models the DAG provides
(``hub.cache``) and the model's ``gradient_checkpointing``. A checkpoint is keyed by the identity alone, and the
Snakemake rule passes the runtime settings untracked (tafs.dag.Untracked), so changing one of them neither re-runs
the job nor restarts training.
"""

from __future__ import annotations

from typing import Any, Mapping

from tafs.config import deep_merge, redact

# TrainConfig keys that change memory, speed or how often progress is saved, never the trained weights.
RUNTIME_KEYS = ("micro_batch", "sample_chunk", "decode_chunk", "text_cache", "checkpoint_every", "max_runtime_min",
                "snapshot_every", "snapshot_keep_last", "eval_every", "eval_prompts", "eval_job")
# Reward factory kwargs of that kind (where a scorer runs, how many images per call, how a server is reached).
REWARD_RUNTIME_KEYS = ("device", "batch_size", "timeout", "retries", "api_key", "api_key_env")
# Model options of that kind.
MODEL_RUNTIME_KEYS = ("gradient_checkpointing",)


def split_keys(cfg: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``cfg`` without ``keys``, the part of ``cfg`` under ``keys``)."""
    return ({k: v for k, v in cfg.items() if k not in keys}, {k: v for k, v in cfg.items() if k in keys})


def split_train(cfg: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(identity, runtime) of a training config dict; ``deep_merge(identity, runtime)`` gives ``cfg`` back."""
    identity, runtime = split_keys(cfg, RUNTIME_KEYS)
    rewards_id, rewards_rt = {}, {}
    for name, kwargs in (cfg.get("reward_kwargs") or {}).items():
        rewards_id[name], rt = split_keys(kwargs or {}, REWARD_RUNTIME_KEYS)
        if rt:
            rewards_rt[name] = rt
    if "reward_kwargs" in cfg:
        identity["reward_kwargs"] = rewards_id
    if rewards_rt:
        runtime["reward_kwargs"] = rewards_rt
    return identity, runtime


def train_identity(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The identity part of a training config, secrets redacted (it is stored in the checkpoint)."""
    return redact(split_train(cfg)[0])


def merge_runtime(identity: Mapping[str, Any], runtime: Mapping[str, Any]) -> dict[str, Any]:
    """The config a job runs: the runtime settings (and the models' folders) over the identity."""
    return deep_merge(dict(identity), dict(runtime))


def differing(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts (for the "starting afresh" message)."""
    if not (isinstance(old, Mapping) and isinstance(new, Mapping)):
        return [] if old == new else [prefix or "(config)"]
    out: list[str] = []
    for k in sorted(set(old) | set(new), key=str):
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in old or k not in new:
            out.append(key)
        else:
            out += differing(old[k], new[k], key)
    return out


def job_identity(train: Mapping[str, Any], model_options: Mapping[str, Any], model: str, prompts: str) -> dict:
    """A training job's checkpoint identity: its config, the model (folder name: a download's name says what and
    which revision, not where the cache is) with its options, and the prompt file's content."""
    from pathlib import Path

    from tafs.hashing import files_hash

    return {"train": train_identity(train), "prompts": files_hash({"prompts": Path(prompts)}),
            "model": {"name": Path(model).name, "options": split_keys(model_options, MODEL_RUNTIME_KEYS)[0]}}
