"""How a job's process(es) start from its Snakemake resources: GPUs, one Slurm job over several nodes, and the
command prefix (one process, `accelerate launch`, or `tafs launch` per node); how a job's shell command ends (its
stderr into its log) and the environment every job inherits (this interpreter first on PATH, the live MLflow target).
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from typing import Any

from tafs.config import ConfigError


def job_gpus(resources: Any) -> int:
    """GPUs a job was given: its `gpu` resource (also after --set-resources), 0 when absent."""
    return int(resources.get("gpu", 0) or 0)


def node_resources(spec: dict[str, Any]) -> dict[str, Any]:
    """The Snakemake resources that make a stage with `nodes` N > 1 one Slurm job of N nodes ({} for N = 1).

    `gpu` (GPUs per node, G) becomes the job's total N x G: the Slurm plugin submits it as --gpus (a total),
    Snakemake counts it, and `--expect-gpus` gets it; `slurm_extra` --gpus-per-node=G makes Slurm put G on
    each node (--gpus alone may split them unevenly). `mpi` tells the jobstep executor to run the rule's
    shell as it is, not inside `srun -n1` (the shell runs its own srun, one launcher per node); the submit
    plugin then wants `tasks` (N: --ntasks, one per node), and `tasks_per_gpu` 0 stops it from also turning
    `tasks` into --ntasks-per-gpu.
    """
    nodes, gpus = int(spec.get("nodes", 1)), int(spec.get("gpu", 0))
    if nodes <= 1:
        return {}
    if gpus < 1:
        raise ConfigError(f"resources.train.nodes = {nodes} needs resources.train.gpu >= 1 (the GPUs of each "
                          "node): multi-node training is GPU training")
    per_node = f"{spec['gpu_model']}:{gpus}" if spec.get("gpu_model") else str(gpus)
    return {"gpu": nodes * gpus, "nodes": nodes, "tasks": nodes, "tasks_per_gpu": 0, "mpi": "srun",
            "slurm_extra": f"--gpus-per-node={per_node}"}


def tafs_launcher(resources: Any) -> str:
    """The command prefix that runs `tafs` for a job: one process, accelerate with one per GPU, or one
    `tafs launch` (torchrun) per node.

    With gpu > 1 on one node the job runs `accelerate launch` with --num_processes = gpu on this node; the
    rendezvous port is picked when the job starts, on the node it runs on (`tafs free-port`). With nodes > 1
    (node_resources) srun starts `tafs launch` on each node with gpu / nodes processes; the node
    count is written out, not $SLURM_NNODES: the jobstep executor drops SLURM_* but the job id from the shell's
    environment.
    """
    nodes = int(resources.get("nodes", 1) or 1)
    gpus = job_gpus(resources)
    if nodes > 1:
        per_node = gpus // nodes
        cpus = per_node * int(resources.get("cpus_per_gpu", 1) or 1)
        return (f"srun --nodes={nodes} --ntasks-per-node=1 --cpus-per-task={cpus} --gpus-per-node={per_node} "
                f"--kill-on-bad-exit=1 python -m tafs launch --nproc-per-node {per_node} --")
    if gpus > 1:
        return ("accelerate launch --multi_gpu --num_processes {n} --num_machines 1 "
                "--mixed_precision no --dynamo_backend no "
                "--main_process_port $(python -m tafs free-port) -m tafs").format(n=gpus)
    return "python -m tafs"


# Every job's stderr goes to its log; when it fails, the log's last lines (tafs ends with one line that says what is
# wrong, where, and what to do) also reach the console, before Snakemake's own error report. With the exit code kept:
# 75 is a training slice that stopped early with a checkpoint (tafs/train/preempt.py), which the Slurm profile
# re-submits.
LOGGED = " 2> {log} || {{ tail -n 3 {log} >&2; exit 1; }}"
LOGGED_RC = " 2> {log} || {{ rc=$?; tail -n 3 {log} >&2; exit $rc; }}"


def logged(command: str, keep_rc: bool = False) -> str:
    """A rule's shell command with its stderr into the rule's `{log}` (and, on failure, its last lines shown)."""
    return command + (LOGGED_RC if keep_rc else LOGGED)


def export_interpreter(environ: MutableMapping[str, str] = os.environ) -> None:
    """Jobs call `python -m tafs` and `snakemake --report`: put the interpreter running the workflow first on PATH,
    so `.venv/bin/snakemake` works without activating the venv (Slurm jobs inherit PATH: --export=ALL). With
    `--sdm conda` Snakemake activates the rule's environment on top of it: its interpreter comes first."""
    environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), environ.get("PATH", "")])


def export_tracking(target: str | None, environ: MutableMapping[str, str] = os.environ) -> None:
    """Jobs (local and on Slurm, --export=ALL) find the MLflow server in TAFS_TRACKING (`Plan.tracking_target`):
    an environment variable, set only with a server, not a rule parameter (a parameter would re-run every job when
    the config changes)."""
    if target:
        environ["TAFS_TRACKING"] = target
