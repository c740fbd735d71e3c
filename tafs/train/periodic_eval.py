"""In-training evaluation (``train.eval_every``): every M iterations, the first ``eval_prompts`` prompts of the
task's evaluation file are sampled with the run's declared evaluation sampler at the tables' NFE and scored by
the task's metrics, so reward hacking shows in the curves (``eval/<metric>`` on that iteration's row of
metrics.jsonl, hence in the live MLflow run) and a checkpoint can be chosen (tafs/train/snapshots.py).

``train.eval_job`` says how: ``{"prompts": <prompt file>, "eval": <EvalConfig kwargs>}``; the DAG fills it in
(tafs.dag.Plan.train_eval_job). Evaluation uses its own seeded generator (``EvalConfig.seed``) and restores the
global torch RNG, so it consumes none of the training's randomness: the trained adapter is the same with and
without it. It scores the weights the run exports (the EMA when kept), on the main process only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from tafs.config import ConfigError, from_dict
from tafs.evaluate import EvalConfig, build_rewards, generate, summarize
from tafs.paths import eval_grid_png
from tafs.prompts import Prompt, read_prompt_file
from tafs.rewards.base import Reward
from tafs.train.ema import LoraEma

# tafs.train.trainer's classes, which import this module (no import cycle)
TrainConfig = Any
Trainer = Any


@dataclass
class PeriodicEval:
    every: int
    cfg: EvalConfig
    prompts: list[Prompt]
    rewards: dict[str, Reward]

    @staticmethod
    def check(every: int | None, n_prompts: int) -> None:
        """Refuse bad values (``eval_job`` is checked when the run starts: the DAG fills it in per job, after
        the method presets' configs are checked)."""
        if every is not None and (not isinstance(every, int) or every < 0):
            raise ValueError(f"train.eval_every must be a non-negative integer or null, got {every!r}")
        if not isinstance(n_prompts, int) or n_prompts < 1:
            raise ValueError(f"train.eval_prompts must be a positive integer, got {n_prompts!r}")

    @classmethod
    def build(cls, cfg: TrainConfig, train_rewards: Mapping[str, Reward]) -> PeriodicEval | None:
        """The evaluation of a run, or None when ``eval_every`` is off. Rewards the run trains on are shared
        (a reward model is loaded once); the others are built here."""
        if not cfg.eval_every:
            return None
        job = cfg.eval_job
        if not (job.get("prompts") and (job.get("eval") or {}).get("metrics")):
            raise ConfigError("train.eval_every needs train.eval_job = {\"prompts\": <file>, \"eval\": {\"metrics\": "
                              "...}} (the DAG fills it in)")
        ecfg = replace(from_dict(EvalConfig, dict(cfg.eval_job["eval"]), "train.eval_job.eval"),
                       per_category=None, images_per_prompt=1)
        prompts = read_prompt_file(cfg.eval_job["prompts"])[:cfg.eval_prompts]
        if not prompts:
            raise ConfigError(f"train.eval_every: no prompts in {cfg.eval_job['prompts']}")
        shared = {k: train_rewards[n] for k, n in ecfg.metrics.items() if n in train_rewards}
        rest = replace(ecfg, metrics={k: n for k, n in ecfg.metrics.items() if n not in train_rewards})
        rewards = {**shared, **build_rewards(rest)}
        return cls(cfg.eval_every, ecfg, prompts, {k: rewards[k] for k in ecfg.metrics})

    @staticmethod
    def after_iteration(trainer: Trainer) -> dict[str, float]:
        """``eval/<metric>`` means (and the seconds it took) when the trainer's evaluation is due after this
        iteration, else nothing."""
        ev = trainer.periodic_eval
        if ev is None or trainer.iteration % ev.every:
            return {}
        t0 = time.time()
        out = ev.evaluate(trainer)
        return {**out, "time_eval_s": time.time() - t0}  # not in time_iter_s: sec_per_iter stays comparable

    def evaluate(self, trainer: Trainer) -> dict[str, float]:
        """Sample, score, save the grid; the denoiser's train/eval mode and the global RNG are left as found."""
        from tafs.report.image_grid import save_grid

        denoiser = trainer.backbone.denoiser()
        was_training = denoiser.training
        denoiser.eval()
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices), LoraEma.weights_of(trainer.ema), trainer.accel.autocast():
            images = generate(trainer.backbone, [p.text for p in self.prompts], self.cfg, progress=False)
        denoiser.train(was_training)
        images = images.float()
        summary = summarize(self.prompts, images, self.rewards, self.cfg.category_mean)
        save_grid(images, self.prompts, eval_grid_png(trainer.ckpt_dir, trainer.iteration),
                  title=f"iteration {trainer.iteration} · {self.cfg.sampler} · {self.cfg.nfe} NFE")
        return {f"eval/{k}": float(v["mean"]) for k, v in summary.items()}
