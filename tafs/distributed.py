"""Multi-GPU launch helpers: a free rendezvous port and the GPU-count check of ``tafs train``.

The Snakemake ``train`` rule runs ``accelerate launch --num_processes N ... -m tafs train`` when its
``gpu`` resource N is above 1 (one process per GPU), ``tafs launch`` (torchrun) on every node when
``resources.train.nodes`` is above 1 (N = nodes x GPUs per node; tafs/launch.py) and plain
``python -m tafs train`` otherwise; it passes ``--expect-gpus N`` so that a job that did not get the GPUs it asked for fails at once, before
loading a model, instead of silently training on the CPU or on fewer GPUs.
"""

from __future__ import annotations

import os
import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on this machine (bind to port 0, let the OS choose).

    Used for accelerate's ``--main_process_port`` so that two multi-GPU jobs on one node never
    fight over the default 29500. (The port is released before accelerate binds it again; the
    window is tiny and a clash fails the job loudly, to be re-run.)
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, 0))
        return int(s.getsockname()[1])


def gpu_count_error(expected: int, visible: int, world_size: int = 1,
                    cuda_visible_devices: str | None = None, cuda_build: bool = True,
                    local_world_size: int | None = None) -> str | None:
    """Why a job with ``expected`` GPUs cannot run as launched, or None when it can.

    expected             the rule's ``gpu`` resource (``--expect-gpus``); 0 = a CPU job, nothing checked
    visible              ``torch.cuda.device_count()`` in this process
    world_size           processes of the launch (``WORLD_SIZE`` under accelerate/torchrun; 1 otherwise)
    cuda_visible_devices ``CUDA_VISIBLE_DEVICES`` as set by Slurm (for the message)
    cuda_build           whether torch was built with CUDA (for the message)
    local_world_size     processes on this node (``LOCAL_WORLD_SIZE``; default ``world_size``: one node)

    One process per GPU: ``world_size`` must equal ``expected`` (so ``expected`` > 1 needs a launcher;
    over several nodes ``expected`` is nodes x GPUs per node) and every process sees either all of its
    node's GPUs (accelerate/torchrun, or plain python with 1 GPU) or only its own one (one GPU per task).
    """
    if expected < 0:
        return f"--expect-gpus must be >= 0, got {expected}"
    if expected == 0:
        return None
    local = world_size if local_world_size is None else local_world_size
    if world_size == expected and visible in (1, local):
        return None
    cvd = "unset" if cuda_visible_devices is None else repr(cuda_visible_devices)
    parts = [f"expected {expected} GPU(s) (resources.train.gpu / the rule's `gpu` resource) but this process "
             f"sees {visible} CUDA device(s) (torch.cuda.device_count(); CUDA_VISIBLE_DEVICES={cvd})"
             + (f" in a launch of {world_size} processes (WORLD_SIZE)" if world_size > 1 else "")]
    if not cuda_build:
        parts.append("this torch is a CPU-only build: install a CUDA build of torch (docs/cluster.md)")
    elif visible == 0:
        parts.append("no GPU was allocated to the job: check the partition has GPUs and that Slurm got "
                     "--gpus (the `gpu` resource), or set gpu: 0 to train on the CPU")
    if world_size == 1 and expected > 1:
        parts.append(f"{expected} GPUs need one process each: run it with `accelerate launch "
                     f"--num_processes {expected} -m tafs train ...` (the Snakemake rule does this)")
    elif world_size > 1 and world_size != expected and local < world_size:
        parts.append(f"the {world_size} processes of all nodes (WORLD_SIZE) must equal resources.train.nodes x "
                     f"gpu ({expected}): --nproc-per-node of `tafs launch` is the GPUs of a node")
    elif world_size > 1 and world_size != expected:
        parts.append(f"accelerate --num_processes ({world_size}) must equal the gpu resource ({expected})")
    elif local < world_size and visible != local:
        parts.append(f"each node runs {local} processes (LOCAL_WORLD_SIZE) and must see as many GPUs: check the "
                     "job got resources.train.gpu GPUs on every node (--gpus-per-node)")
    elif visible > expected:
        parts.append("more GPUs are visible than requested: restrict them with CUDA_VISIBLE_DEVICES")
    return "; ".join(parts)


def check_expected_gpus(expected: int) -> None:
    """Raise ``SystemExit`` with :func:`gpu_count_error`'s message when the GPUs do not match."""
    if expected == 0:
        return
    import torch

    err = gpu_count_error(
        expected,
        torch.cuda.device_count(),
        world_size=int(os.environ.get("WORLD_SIZE", "1") or 1),
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        cuda_build=torch.version.cuda is not None,
        local_world_size=int(os.environ["LOCAL_WORLD_SIZE"]) if os.environ.get("LOCAL_WORLD_SIZE") else None,
    )
    if err:
        raise SystemExit(f"error: {err}")
