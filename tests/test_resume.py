"""Training loses no work: runtime settings keep the checkpoint, and a stop (SIGTERM, SIGUSR1, the time budget)
checkpoints first and exits with the re-run code; every resumed run ends with the uninterrupted run's adapter.

The tiny toy backbone with a registered brightness reward (every sample scores differently, so the adapter moves).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from tafs import cli
from tafs.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from tafs.config import deep_merge, from_dict
from tafs.io import read_jsonl
from tafs.models.loading import load_backbone
from tafs.train.identity import differing, split_train, train_identity
from tafs.train.preempt import PREEMPTED_EXIT, Preempted
from tafs.train.resume import checkpoint_identity
from tafs.train.trainer import Trainer, TrainConfig

from conftest import toy_prompts, registered_brightness

torch.set_num_threads(1)
REWARD = "test_brightness_resume"
BASE = {"seed": 0, "iterations": 4, "prompts_per_iter": 2, "group_size": 4, "lr": 1e-2, "weight_decay": 0.0,
        "minibatches": 2, "checkpoint_every": 2, "beta": 0.01, "lora": {"rank": 4, "alpha": 8},
        "method": {"n_annealed": 3}, "advantage": {"rewards": {REWARD: 1.0}, "n_adv": 3}}
RESUME_LOG = "tafs.train.resume"


registered_reward = registered_brightness(REWARD)


def make_trainer(model_dir: Path, ckpt: Path, **override) -> Trainer:
    cfg = from_dict(TrainConfig, deep_merge(BASE, override), "train")
    return Trainer(load_backbone(model_dir, device="cpu"), cfg, ckpt, toy_prompts("train"))


def lora_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(trainer.backbone.denoiser()).items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b) and a
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0, msg=k)


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tmp_path_factory):
    trainer = make_trainer(tiny_model_dir, tmp_path_factory.mktemp("full"))
    start = lora_state(trainer)
    trainer.run(resume=False)
    final = lora_state(trainer)
    assert any(not torch.allclose(final[k], start[k]) for k in start)  # training moved the adapter
    return final


# -- (a) runtime settings are not the run's identity --------------------------------------------------------

def test_identity_leaves_out_runtime_settings():
    cfg = asdict(from_dict(TrainConfig, deep_merge(BASE, {"reward_kwargs": {
        REWARD: {"path": "/x", "device": "cuda", "batch_size": 8, "dtype": "bf16"}}}), "train"))
    identity, runtime = split_train(cfg)
    assert set(runtime) == {"micro_batch", "sample_chunk", "decode_chunk", "text_cache", "checkpoint_every",
                            "max_runtime_min", "snapshot_every", "snapshot_keep_last", "eval_every", "eval_prompts",
                            "eval_job", "reward_kwargs"}
    assert identity["reward_kwargs"] == {REWARD: {"path": "/x", "dtype": "bf16"}}  # dtype changes scores: kept
    assert deep_merge(identity, runtime) == cfg
    faster = {**cfg, "micro_batch": 3, "checkpoint_every": 7, "text_cache": 0, "max_runtime_min": 5.0,
              "snapshot_every": 2, "snapshot_keep_last": 1}
    assert train_identity(faster) == train_identity(cfg)
    assert differing(train_identity(cfg), train_identity({**cfg, "lr": 0.5})) == ["lr"]


@pytest.mark.parametrize("change", [{"micro_batch": 2}, {"sample_chunk": 3}, {"decode_chunk": 2}, {"text_cache": 1},
                                    {"checkpoint_every": 1}], ids=lambda c: next(iter(c)))
def test_runtime_change_resumes_to_the_same_adapter(tiny_model_dir, tmp_path, uninterrupted, caplog, change):
    ckpt = tmp_path / "ck"
    assert make_trainer(tiny_model_dir, ckpt).run(stop_after=2)["iterations"] == 2  # checkpoint at 2
    second = make_trainer(tiny_model_dir, ckpt, **change)
    with caplog.at_level(logging.INFO, logger=RESUME_LOG):
        out = second.run()
    assert out["resumed"] is True and out["iterations"] == 4
    assert "resuming from iteration 2" in caplog.text
    assert_same(lora_state(second), uninterrupted)
    assert [r["iteration"] for r in read_jsonl(ckpt / "metrics.jsonl")] == [0, 1, 2, 3]


def test_changed_lr_starts_afresh_and_says_why(tiny_model_dir, tmp_path, caplog):
    ckpt = tmp_path / "ck"
    make_trainer(tiny_model_dir, ckpt).run(stop_after=2)
    other = make_trainer(tiny_model_dir, ckpt, lr=5e-3, micro_batch=2)
    with caplog.at_level(logging.INFO, logger=RESUME_LOG):
        out = other.run(stop_after=1)
    assert out["resumed"] is False and other.iteration == 1
    assert ("checkpoint at iteration 2 was written by a different config: train.lr; starting from 0"
            in caplog.text), caplog.text
    assert "resuming" not in caplog.text


def test_checkpoint_of_an_earlier_version_is_resumed(tiny_model_dir, tmp_path, uninterrupted, caplog):
    """Earlier versions keyed the checkpoint by the whole config: such a file is resumed after a runtime change."""
    ckpt = tmp_path / "ck"
    first = make_trainer(tiny_model_dir, ckpt)
    first.run(stop_after=2)
    path = checkpoint_path(ckpt, checkpoint_identity(first))
    state = {k: v for k, v in load_checkpoint(ckpt, checkpoint_identity(first)).items() if k != "config"}
    path.unlink()
    save_checkpoint(ckpt, state, asdict(first.cfg))  # the old key and stored config
    second = make_trainer(tiny_model_dir, ckpt, micro_batch=2)
    with caplog.at_level(logging.INFO, logger=RESUME_LOG):
        assert second.run()["resumed"] is True
    assert "resuming from iteration 2" in caplog.text
    assert_same(lora_state(second), uninterrupted)
    assert [p.name for p in ckpt.glob("checkpoint-*.pt")] == [path.name]  # re-keyed by the identity


# -- (b, c) stops: a signal, the time budget --------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_signal_checkpoints_after_the_iteration(tiny_model_dir, tmp_path, uninterrupted, monkeypatch, sig):
    """The signal arrives mid-iteration: the iteration finishes, a checkpoint is written, the run raises
    Preempted; the re-run resumes there and ends with the uninterrupted adapter."""
    got: list[str] = []

    def fallback(*_: object) -> None:  # without the trainer's own handler the test fails here, not the process
        got.append("not handled by the trainer")

    old = signal.signal(sig, fallback)
    ckpt = tmp_path / "ck"
    first = make_trainer(tiny_model_dir, ckpt, checkpoint_every=100)  # only the stop writes a checkpoint
    real = Trainer.iterate

    def iterate_then_signal(self):
        row = real(self)
        if self.iteration == 0:
            os.kill(os.getpid(), sig)
        return row

    monkeypatch.setattr(Trainer, "iterate", iterate_then_signal)
    try:
        with pytest.raises(Preempted) as stopped:
            first.run()
    finally:
        restored = signal.getsignal(sig)
        signal.signal(sig, old)
    assert restored is fallback  # the trainer's handler is gone after the run
    assert not got and stopped.value.iteration == 1 and sig.name in str(stopped.value)
    assert load_checkpoint(ckpt, checkpoint_identity(first))["iteration"] == 1
    monkeypatch.setattr(Trainer, "iterate", real)
    second = make_trainer(tiny_model_dir, ckpt, checkpoint_every=100)
    assert second.run()["resumed"] is True
    assert_same(lora_state(second), uninterrupted)


def _cli_train(model: Path, prompts: Path, out: Path, ckpt: Path, runtime: dict | None = None) -> int:
    """`python -m tafs train` in this process (the brightness reward is registered here); its exit code."""
    args = ["train", "--model", str(model), "--prompts", str(prompts), "--cfg", json.dumps(BASE),
            "--out", str(out), "--ckpt-dir", str(ckpt)]
    try:
        cli.main(args + (["--runtime", json.dumps(runtime)] if runtime else []))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def _adapter(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(out / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    from tafs.prompts import write_prompt_file

    path = tmp_path_factory.mktemp("prompts") / "train.jsonl"
    write_prompt_file(path, toy_prompts("train"))
    return path


def test_time_budget_runs_in_slices_to_the_same_adapter(tiny_model_dir, prompt_file, tmp_path, monkeypatch):
    monkeypatch.delenv("TAFS_TRACKING", raising=False)
    full = tmp_path / "full"
    assert _cli_train(tiny_model_dir, prompt_file, full, tmp_path / "ck_full") == 0
    out, ckpt, codes = tmp_path / "sliced", tmp_path / "ck", []
    budget = {"train": {"max_runtime_min": 1e-6}}  # passed after the first iteration: one iteration a slice
    while not codes or codes[-1] == PREEMPTED_EXIT:
        codes.append(_cli_train(tiny_model_dir, prompt_file, out, ckpt, budget))
        assert len(codes) <= 5, codes
        if codes[-1] == PREEMPTED_EXIT:
            assert not (out / "adapter").exists()  # a slice exports nothing
    assert codes == [PREEMPTED_EXIT] * 3 + [0]
    assert [r["iteration"] for r in read_jsonl(out / "metrics.jsonl")] == [0, 1, 2, 3]
    assert_same(_adapter(out), _adapter(full))


def test_sigterm_to_the_cli_process(tiny_model_dir, prompt_file, tmp_path):
    """A real process: SIGTERM once the first iteration is logged; it exits with the re-run code and a checkpoint,
    and the next launch resumes from it."""
    cfg = {"iterations": 12, "prompts_per_iter": 2, "group_size": 2, "checkpoint_every": 1000,
           "lora": {"rank": 4, "alpha": 8}, "method": {"n_annealed": 2},
           "advantage": {"n_adv": 2, "rewards": {"toy_dense": 1.0}}}
    ckpt = tmp_path / "ck"
    cmd = [sys.executable, "-m", "tafs", "train", "--model", str(tiny_model_dir), "--prompts", str(prompt_file),
           "--cfg", json.dumps(cfg), "--out", str(tmp_path / "out"), "--ckpt-dir", str(ckpt)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONPATH": str(Path.cwd())}
    env.pop("TAFS_TRACKING", None)
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not ((ckpt / "metrics.jsonl").exists() and read_jsonl(ckpt / "metrics.jsonl")):
        assert proc.poll() is None and time.time() < deadline, "training ended before its first iteration"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT, err
    assert "SIGTERM received" in err and "checkpoint written" in err
    files = list(ckpt.glob("checkpoint-*.pt"))
    assert len(files) == 1
    stopped = torch.load(files[0], weights_only=True)["iteration"]
    assert 1 <= stopped < 12
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"resuming from iteration {stopped}" in res.stderr
    assert [r["iteration"] for r in read_jsonl(tmp_path / "out" / "metrics.jsonl")] == list(range(12))
