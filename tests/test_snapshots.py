"""Intermediate adapters (train.snapshot_every, tafs/train/snapshots.py) on the tiny toy backbone: the K newest
are kept, each loads as an adapter, the last one is the exported adapter (EMA weights), a resumed run neither
rewrites nor deletes earlier ones, and the settings are not part of the run's identity."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tafs.config import deep_merge, from_dict
from tafs.models.loading import load_backbone
from tafs.paths import eval_grid_png, snapshot_dir, snapshots_dir
from tafs.train import snapshots
from tafs.train.identity import train_identity
from tafs.train.trainer import Trainer, TrainConfig

from conftest import toy_prompts, registered_brightness

torch.set_num_threads(1)
REWARD = "test_brightness_snapshots"
BASE = {"seed": 0, "iterations": 3, "prompts_per_iter": 2, "group_size": 2, "lr": 1e-2, "weight_decay": 0.0,
        "minibatches": 1, "checkpoint_every": 1, "lora": {"rank": 4, "alpha": 8}, "method": {"n_annealed": 2},
        "advantage": {"rewards": {REWARD: 1.0}, "n_adv": 2}, "snapshot_every": 1}


registered_reward = registered_brightness(REWARD)


def make_cfg(**override) -> TrainConfig:
    return from_dict(TrainConfig, deep_merge(BASE, override), "train")


def make_trainer(model_dir: Path, ckpt: Path, **override) -> Trainer:
    return Trainer(load_backbone(model_dir, device="cpu"), make_cfg(**override), ckpt, toy_prompts("train"))


def names(ckpt: Path) -> list[str]:
    return [p.name for p in snapshots.existing(ckpt)]


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    return {f"{f.name}:{k}": v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


def test_keeps_the_last_k_loadable_and_the_last_is_the_exported_adapter(tiny_model_dir, tmp_path):
    ckpt = tmp_path / "ck"
    trainer = make_trainer(tiny_model_dir, ckpt, snapshot_keep_last=2,
                           ema={"enabled": True, "decay": 0.5, "every": 1})
    trainer.run(resume=False)
    assert names(ckpt) == ["iter00002", "iter00003"]
    assert not [p for p in snapshots_dir(ckpt).iterdir() if p.name.startswith(".")]  # no temporary folder left
    trainer.export(tmp_path / "run", {"iterations": 3})
    final = tensors(tmp_path / "run" / "adapter")
    last = tensors(snapshot_dir(ckpt, 3))
    assert final and set(last) == set(final)
    for k in final:
        assert torch.equal(last[k], final[k]), k
    before = tensors(snapshot_dir(ckpt, 2))
    assert any(not torch.equal(before[k], last[k]) for k in last)  # a different adapter per iteration
    for it in (2, 3):  # each one loads as an adapter
        loaded = load_backbone(tiny_model_dir, adapter=snapshot_dir(ckpt, it), device="cpu")
        lora = {n for n, _ in loaded.denoiser().named_parameters() if "lora_" in n}
        assert lora


def test_resume_keeps_earlier_snapshots(tiny_model_dir, tmp_path):
    ckpt = tmp_path / "ck"
    make_trainer(tiny_model_dir, ckpt).run(stop_after=2)
    assert names(ckpt) == ["iter00001", "iter00002"]
    stamps = {p.name: p.stat().st_mtime_ns for p in snapshots.existing(ckpt)}
    first = tensors(snapshot_dir(ckpt, 1))
    out = make_trainer(tiny_model_dir, ckpt).run()
    assert out["resumed"] and names(ckpt) == ["iter00001", "iter00002", "iter00003"]
    assert {p.name: p.stat().st_mtime_ns for p in snapshots.existing(ckpt)[:2]} == stamps  # not rewritten
    again = tensors(snapshot_dir(ckpt, 1))
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_fresh_start_drops_the_earlier_runs_snapshots(tiny_model_dir, tmp_path):
    ckpt = tmp_path / "ck"
    stale = snapshot_dir(ckpt, 7)
    stale.mkdir(parents=True)
    grid = eval_grid_png(ckpt, 7)
    grid.parent.mkdir(parents=True)
    grid.write_bytes(b"")
    make_trainer(tiny_model_dir, ckpt, snapshot_every=2).run(resume=False)
    assert names(ckpt) == ["iter00002"] and not grid.exists()


def test_off_by_default_and_every_n(tiny_model_dir, tmp_path):
    assert TrainConfig().snapshot_every is None
    make_trainer(tiny_model_dir, tmp_path / "off", snapshot_every=0).run(resume=False)
    assert not snapshots_dir(tmp_path / "off").exists()
    assert [snapshots.due(i, 2) for i in range(5)] == [False, False, True, False, True]


def test_not_part_of_the_identity_and_checked():
    cfg = asdict(make_cfg())
    assert train_identity(cfg) == train_identity({**cfg, "snapshot_every": 5, "snapshot_keep_last": 1})
    for bad in ({"snapshot_every": -1}, {"snapshot_keep_last": 0}):
        with pytest.raises(ValueError, match="snapshot"):
            make_cfg(**bad)
