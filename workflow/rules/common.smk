# Shared helpers for the rules: paths and config sections passed to the CLI as quoted JSON.
import json
import re
import shlex
from pathlib import Path

from tafs.config import deep_merge
from tafs.grid import build_grid

R = config["results"]


def cfg_json(section):
    """A config section as one shell-quoted JSON argument for `python -m tafs ... --cfg`."""
    return shlex.quote(json.dumps(config[section], sort_keys=True))


def base_model_dir():
    """A user-supplied pretrained folder, or the toy base the DAG pretrains."""
    return config["model"]["pretrained"] or f"{R}/models/base"


GRID = build_grid(config)  # every training run and which table row it fills (tafs/grid.py)


def scorer_dir():
    return f"{R}/models/clip_scorer"


def _uses_dag_scorer(kwargs):
    return "path" in kwargs and not kwargs["path"]


def reward_kwargs():
    """Factory kwargs of every reward model; `path: null` = the toy scorer the DAG trains."""
    return {name: {**kw, "path": scorer_dir()} if _uses_dag_scorer(kw) else dict(kw)
            for name, kw in config.get("reward_models", {}).items()}


def scorer_inputs(names):
    """The DAG-trained scorer folder, when one of the rewards `names` uses it."""
    models = config.get("reward_models", {})
    return [scorer_dir()] if any(_uses_dag_scorer(models.get(n, {})) for n in names) else []


def eval_cfg_json():
    return shlex.quote(json.dumps({**config["eval"], "scorers": reward_kwargs()}, sort_keys=True))


def train_cfg(run, seed):
    """The run's merged training config at this seed, with the kwargs of the rewards it trains on."""
    cfg = deep_merge(GRID.runs[run].train, {"seed": seed})
    kwargs = reward_kwargs()
    cfg["reward_kwargs"] = {n: kwargs[n] for n in cfg["advantage"]["rewards"] if n in kwargs}
    return cfg


def base_evals():
    sweep = config["sweep"]
    return expand(f"{R}/eval/base/{{sampler}}/nfe{{nfe}}/metrics.json",
                  sampler=sweep["base_samplers"], nfe=sweep["base_nfe"])


def run_evals():
    nfes = config["sweep"]["run_nfe"]
    return [f"{R}/eval/runs/{name}/seed{s}/{spec.eval_sampler}/nfe{n}/metrics.json"
            for name, spec in GRID.runs.items() for s in config["seeds"] for n in nfes]


def train_summaries():
    return [f"{R}/runs/{name}/seed{s}/train_summary.json" for name in GRID.runs for s in config["seeds"]]


# -- job resources (config `resources:`; see docs/cluster.md) ------------------------------------------


def stage_resources(stage):
    """Snakemake resources of a stage group in config `resources:` (pretrain, train, eval, default).

    gpu > 0: `gpu`, `cpus_per_gpu` and `nodes` = 1 (the Slurm plugin submits --gpus=N --cpus-per-gpu=C
    --nodes=1).
    gpu == 0 or a CPU stage: no GPU resource at all, and `cpus_per_task` = the rule's threads (the
    plugin's `cpus_per_task` takes precedence over `cpus_per_gpu`, so it is only set for CPU jobs).
    `runtime` is in minutes, `mem_mb` in MB.
    """
    spec = config["resources"][stage]
    res = {"mem_mb": spec["mem_mb"], "runtime": spec["runtime"]}
    gpus = int(spec.get("gpu", 0))
    if gpus > 0:
        res["gpu"] = gpus
        res["cpus_per_gpu"] = int(spec.get("cpus_per_gpu", 4))
        res["nodes"] = 1  # --gpus counts GPUs per job: keep them on one node (accelerate runs on one)
    else:
        res["cpus_per_task"] = lambda wc, threads: threads
    return res


def job_gpus(resources):
    """GPUs a job was given: its `gpu` resource (also after --set-resources), 0 when absent."""
    return int(resources.get("gpu", 0) or 0)


def tafs_launcher(resources):
    """The command prefix that runs `tafs` for a job: one process, or accelerate with one per GPU.

    With gpu > 1 the job runs `accelerate launch` with --num_processes = gpu on this node; the
    rendezvous port is picked when the job starts, on the node it runs on (`tafs free-port`).
    """
    gpus = job_gpus(resources)
    if gpus > 1:
        return ("accelerate launch --multi_gpu --num_processes {n} --num_machines 1 "
                "--mixed_precision no --dynamo_backend no "
                "--main_process_port $(python -m tafs free-port) -m tafs").format(n=gpus)
    return "python -m tafs"
