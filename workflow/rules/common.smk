# Shared helpers for the rules: paths and config sections passed to the CLI as quoted JSON.
import json
import shlex
from pathlib import Path

from tafs.config import deep_merge

R = config["results"]


def cfg_json(section):
    """A config section as one shell-quoted JSON argument for `python -m tafs ... --cfg`."""
    return shlex.quote(json.dumps(config[section], sort_keys=True))


def base_model_dir():
    """A user-supplied pretrained folder, or the toy base the DAG pretrains."""
    return config["model"]["pretrained"] or f"{R}/models/base"


def base_evals():
    sweep = config["sweep"]
    return expand(f"{R}/eval/base/{{sampler}}/nfe{{nfe}}/metrics.json",
                  sampler=sweep["base_samplers"], nfe=sweep["base_nfe"])


def train_cfg_json(method, seed):
    """The `train` section deep-merged with the method's overrides, at this seed."""
    cfg = deep_merge(config["train"], config["methods"][method].get("train", {}))
    cfg["seed"] = seed
    return shlex.quote(json.dumps(cfg, sort_keys=True))


def run_evals():
    sweep = config["sweep"]
    return [f"{R}/eval/runs/{m}/seed{s}/{config['methods'][m]['eval_sampler']}/nfe{n}/metrics.json"
            for m in config["methods"] for s in config["seeds"] for n in sweep["run_nfe"]]


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
