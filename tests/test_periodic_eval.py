"""In-training evaluation (train.eval_every, tafs/train/periodic_eval.py) on the tiny toy backbone: eval/<metric>
on the rows of the evaluated iterations, finite and the same when re-run, a grid per evaluation, and the same
trained adapter with and without it (evaluation consumes none of the training's randomness)."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from tafs.config import deep_merge, from_dict
from tafs.io import read_jsonl
from tafs.models.loading import load_backbone
from tafs.paths import eval_grid_png
from tafs.prompts import write_prompt_file
from tafs.rewards import registry
from tafs.train.identity import train_identity
from tafs.train.periodic_eval import PeriodicEval
from tafs.train.trainer import Trainer, TrainConfig

from conftest import brightness_reward, toy_prompts

torch.set_num_threads(1)
REWARD, OTHER = "test_brightness_peval", "test_brightness_peval_only"  # trained on / evaluation only
BASE = {"seed": 0, "iterations": 2, "prompts_per_iter": 2, "group_size": 2, "lr": 1e-2, "weight_decay": 0.0,
        "minibatches": 1, "checkpoint_every": 1, "lora": {"rank": 4, "alpha": 8}, "method": {"n_annealed": 2},
        "advantage": {"rewards": {REWARD: 1.0}, "n_adv": 2}}


@pytest.fixture(scope="module", autouse=True)
def registered_rewards():
    for name in (REWARD, OTHER):
        registry.register(brightness_reward(name))
    yield
    for name in (REWARD, OTHER):
        registry.unregister(name)


@pytest.fixture(scope="module")
def eval_job(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("prompts") / "test.jsonl"
    write_prompt_file(path, toy_prompts("test"))
    return {"prompts": str(path), "eval": {"sampler": "annealed", "nfe": 3, "per_category": 4,
                                           "metrics": {"bright": REWARD, "other": OTHER}}}


def run(model_dir: Path, ckpt: Path, **override) -> Trainer:
    cfg = from_dict(TrainConfig, deep_merge(BASE, override), "train")
    trainer = Trainer(load_backbone(model_dir, device="cpu"), cfg, ckpt, toy_prompts("train"))
    trainer.run(resume=False)
    return trainer


def lora(trainer: Trainer) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(trainer.backbone.denoiser()).items()}


def eval_rows(ckpt: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k.startswith("eval/")} for r in read_jsonl(ckpt / "metrics.jsonl")]


def test_eval_rows_are_finite_repeatable_and_leave_training_alone(tiny_model_dir, tmp_path, eval_job):
    on = {"eval_every": 1, "eval_prompts": 3, "eval_job": eval_job}
    a = run(tiny_model_dir, tmp_path / "a", **on)
    rows = eval_rows(tmp_path / "a")
    assert [sorted(r) for r in rows] == [["eval/bright", "eval/other"]] * 2
    assert all(math.isfinite(v) for r in rows for v in r.values())
    assert rows[0]["eval/bright"] == rows[0]["eval/other"]  # the same reward, shared or built: the same images
    assert rows[0] != rows[1]  # the adapter moved between the two evaluations
    assert eval_grid_png(tmp_path / "a", 1).is_file() and eval_grid_png(tmp_path / "a", 2).is_file()
    assert len(a.periodic_eval.prompts) == 3

    assert eval_rows(run(tiny_model_dir, tmp_path / "b", **on).ckpt_dir) == rows  # seeded: the same values

    off = run(tiny_model_dir, tmp_path / "off")
    assert eval_rows(tmp_path / "off") == [{}, {}]
    trained, plain = lora(a), lora(off)
    assert set(trained) == set(plain) and all(torch.equal(trained[k], plain[k]) for k in plain)
    strip = lambda r: {k: v for k, v in r.items() if not k.startswith(("eval/", "time"))}
    assert [strip(r) for r in read_jsonl(tmp_path / "a" / "metrics.jsonl")] == \
        [strip(r) for r in read_jsonl(tmp_path / "off" / "metrics.jsonl")]


def test_every_m_iterations(tiny_model_dir, tmp_path, eval_job):
    run(tiny_model_dir, tmp_path / "c", iterations=2, eval_every=2, eval_prompts=2, eval_job=eval_job)
    assert [bool(r) for r in eval_rows(tmp_path / "c")] == [False, True]


def test_settings_are_checked_and_not_the_identity(eval_job):
    with pytest.raises(ValueError, match="eval_job"):  # at the start of the run: the DAG fills it in per job
        PeriodicEval.build(from_dict(TrainConfig, deep_merge(BASE, {"eval_every": 1}), "train"), {})
    with pytest.raises(ValueError, match="eval_prompts"):
        from_dict(TrainConfig, deep_merge(BASE, {"eval_prompts": 0}), "train")
    cfg = asdict(from_dict(TrainConfig, BASE, "train"))
    assert train_identity(cfg) == train_identity({**cfg, "eval_every": 5, "eval_prompts": 3, "eval_job": eval_job})


def test_dag_fills_in_the_eval_job_untracked():
    """The train job's runtime part (untracked) carries the evaluation prompts, the task's metrics, the run's
    declared sampler at tables.main_nfe; the identity is the same with and without; the rule reads the prompts."""
    import yaml

    from tafs.dag import Plan

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    off, on = Plan(cfg), Plan(deep_merge(cfg, {"train": {"eval_every": 5, "eval_prompts": 4}}))
    run_name = next(iter(on.grid.runs))
    (id_off, rt_off), (id_on, rt_on) = off.train_job(run_name, 0), on.train_job(run_name, 0)
    assert id_off == id_on and "eval_job" not in rt_off["train"] and off.train_eval_inputs(run_name) == []
    job = rt_on["train"]["eval_job"]
    assert job["prompts"] == on.eval_prompts() and job["prompts"] in on.train_eval_inputs(run_name)
    assert job["eval"]["sampler"] == on.grid.runs[run_name].eval_sampler
    assert job["eval"]["nfe"] == cfg["tables"]["main_nfe"]
    assert job["eval"]["metrics"] == on.eval_cfg()["metrics"] and job["eval"]["metrics"]


def test_a_resumed_run_logs_the_same_eval_rows(tiny_model_dir, tmp_path, eval_job):
    on = {"eval_every": 1, "eval_prompts": 2, "eval_job": eval_job, "iterations": 3}
    whole = eval_rows(run(tiny_model_dir, tmp_path / "whole", **on).ckpt_dir)
    cfg = from_dict(TrainConfig, deep_merge(BASE, on), "train")
    first = Trainer(load_backbone(tiny_model_dir, device="cpu"), cfg, tmp_path / "sliced", toy_prompts("train"))
    first.run(resume=False, stop_after=2)
    second = Trainer(load_backbone(tiny_model_dir, device="cpu"), cfg, tmp_path / "sliced", toy_prompts("train"))
    assert second.run()["resumed"]
    assert eval_rows(tmp_path / "sliced") == whole
