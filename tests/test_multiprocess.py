"""Multi-process training is one training (tafs/train/shard.py): 2 CPU processes (accelerate's MULTI_CPU state,
gloo; started by torchrun, since `accelerate launch --cpu` starts one process without an MPI set-up) train the
same adapter as 1 process with the same global batch, and a checkpoint written by 2 processes resumes in 1 to the
same result. So do 2 "nodes" of 1 process each, started by our multi-node launcher (`tafs launch`, as srun
starts it on each node of a Slurm job) on localhost.

The reward is a tiny random CLIP (tafs.rewards.tiny), whose scores differ for every sample, so the advantages and
the gradients are not zero; the learning rate is large enough that 2 iterations move every LoRA matrix.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tafs.distributed import free_port
from tafs.launch import rendezvous_port
from tafs.prompts import write_prompt_file
from tafs.rewards.tiny import build

from conftest import toy_prompts

pytestmark = pytest.mark.slow
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _launch(nproc: int) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "tafs"]
    return [str(TORCHRUN), "--nproc_per_node", str(nproc), "--master_port", str(free_port()), "-m", "tafs"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "ACCELERATE_USE_CPU": "true"}


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("mp")
    write_prompt_file(root / "train.jsonl", toy_prompts("train"))
    clip = build("clip", root / "clip")
    cfg = {"iterations": 2, "prompts_per_iter": 4, "group_size": 4, "minibatches": 3, "checkpoint_every": 1,
           "lr": 0.01, "lora": {"rank": 4, "alpha": 8}, "method": {"n_annealed": 2},
           "advantage": {"n_adv": 2, "rewards": {"clip": 1.0}},
           "reward_kwargs": {"clip": {"path": str(clip), "scale": 1.0, "device": "cpu"}}, "seed": 3}
    return root, tiny_model_dir, cfg


def _train_args(setup, name: str, ckpt: str | None = None, **changes) -> list[str]:
    """`train ...` of run ``name`` (out: root/name) without the launcher."""
    root, model, cfg = setup
    return ["train", "--model", str(model), "--prompts", str(root / "train.jsonl"), "--cfg",
            json.dumps({**cfg, **changes}), "--out", str(root / name), "--ckpt-dir", str(root / (ckpt or f"{name}_ck"))]


def _train(setup, name: str, nproc: int, *extra: str, ckpt: str | None = None, **changes) -> Path:
    root = setup[0]
    out = root / name
    cmd = [*_launch(nproc), *_train_args(setup, name, ckpt, **changes), *extra]
    res = subprocess.run(cmd, cwd=root, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return out


def _adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "adapter" / "adapter_model.safetensors")


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_train_what_one_does(setup):
    one = _train(setup, "one", 1)
    two = _train(setup, "two", 2)
    assert [json.loads((o / "train_summary.json").read_text())["processes"] for o in (one, two)] == [1, 2]
    a, b = _adapter(one), _adapter(two)
    assert set(a) == set(b) and len(a) > 0
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=0, msg=k)
    # not a no-op: every lora_B left its zero start (but the last block's add_q_proj: SD3 discards its output)
    assert all(a[k].abs().max() > 1e-4 for k in a if "lora_B" in k and "add_q_proj" not in k)
    # the logged rewards are the global batch's, and the loss statistics are the global minibatch means
    for r1, r2 in zip(_rows(one), _rows(two)):
        for key in ("reward/clip/final_mean", "reward/clip/step2_mean", "loss", "clip_frac", "ratio"):
            assert r2[key] == pytest.approx(r1[key], rel=1e-5, abs=1e-6), key


def test_micro_batches_and_sample_chunks_change_nothing(setup):
    """Memory knobs: forward/backward 3 samples at a time and sampling 5 at a time, on 2 processes, train the
    same adapter as one process doing everything at once (the loss is each chunk's share of the minibatch
    mean; each sample chunk draws the same noise)."""
    root = setup[0]
    one = root / "one" if (root / "one").exists() else _train(setup, "one", 1)
    chunked = _train(setup, "chunked", 2, micro_batch=3, sample_chunk=5)
    a, b = _adapter(one), _adapter(chunked)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=0, msg=k)
    for r1, r2 in zip(_rows(one), _rows(chunked)):
        assert r2["reward/clip/final_mean"] == pytest.approx(r1["reward/clip/final_mean"], rel=1e-5)
        assert r2["loss"] == pytest.approx(r1["loss"], rel=1e-4, abs=1e-6)


def test_a_checkpoint_of_two_processes_resumes_in_one(setup):
    root = setup[0]
    straight = root / "one"
    if not straight.exists():
        straight = _train(setup, "one", 1)
    _train(setup, "half", 2, "--stop-after", "1", ckpt="shared_ck")  # killed after iteration 0
    resumed = _train(setup, "rest", 1, ckpt="shared_ck")
    assert [r["iteration"] for r in _rows(resumed)] == [0, 1]
    a, b = _adapter(straight), _adapter(resumed)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=0, msg=k)
    shutil.rmtree(root / "shared_ck")


def test_a_global_batch_that_does_not_split_is_refused(setup):
    root, model, cfg = setup
    bad = {**cfg, "prompts_per_iter": 3}
    cmd = [*_launch(2), "train", "--model", str(model), "--prompts", str(root / "train.jsonl"), "--cfg",
           json.dumps(bad), "--out", str(root / "bad"), "--ckpt-dir", str(root / "bad_ck")]
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, env=_env())
    assert res.returncode != 0
    assert "prompts_per_iter = 3" in res.stderr + res.stdout and "divisible by the 2 training processes" in \
        res.stderr + res.stdout


def _job_id_with_free_port() -> int:
    """A fake SLURM_JOB_ID whose rendezvous port (20000 + id % 20000) is free on this machine now."""
    for job_id in range(1234567, 1234567 + 20000, 211):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", rendezvous_port(job_id)))
            except OSError:
                continue
            return job_id
    raise RuntimeError("no free port in 20000-39999")


def test_two_nodes_train_what_one_process_does(setup):
    """Node 0 and node 1 of a fake 2-node Slurm job (one process each, gloo) started concurrently by
    `tafs launch`, which reads SLURM_NNODES / SLURM_NODEID / SLURM_JOB_ID (the port) and MASTER_ADDR and execs
    torchrun: the adapter is the 1-process one."""
    root = setup[0]
    one = root / "one" if (root / "one").exists() else _train(setup, "one", 1)
    job_id = _job_id_with_free_port()
    env = {k: v for k, v in _env().items() if not k.startswith(("SLURM_", "MASTER_"))}
    cmd = [sys.executable, "-m", "tafs", "launch", "--nproc-per-node", "1", "--", *_train_args(setup, "nodes")]
    logs = [(root / f"node{r}.log").open("w") for r in (0, 1)]
    procs = [subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                              env={**env, "SLURM_NNODES": "2", "SLURM_NODEID": str(r), "SLURM_JOB_ID": str(job_id),
                                   "MASTER_ADDR": "127.0.0.1"}) for r, log in zip((0, 1), logs)]
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for log in logs:
            log.close()
    text = "\n".join((root / f"node{r}.log").read_text()[-4000:] for r in (0, 1))
    assert codes == [0, 0], text
    assert f"--master_port {rendezvous_port(job_id)}" in text and "--node_rank 1" in text, text
    summary = json.loads((root / "nodes" / "train_summary.json").read_text())
    assert summary["processes"] == 2
    a, b = _adapter(one), _adapter(root / "nodes")
    assert set(a) == set(b) and len(a) > 0
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=0, msg=k)
