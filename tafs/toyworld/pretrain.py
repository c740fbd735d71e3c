"""Rectified-flow pretraining of the toy base on rendered shapes (``tafs pretrain``).

CFG dropout, EMA (diffusers' ``EMAModel``), logit-normal sigma sampling, cosine LR; deterministic
under a seed and resumable: each step draws its batch from generators seeded by (seed, step), and
a checkpoint (weights, EMA, optimiser, scheduler, step) is written every ``checkpoint_every`` steps.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from tafs import flow
from tafs.checkpoint import load_checkpoint, save_checkpoint
from tafs.io import atomic_dir, write_json
from tafs.models.toy import ToyModelConfig, build_toy
from tafs.seeding import seed_everything, step_generators
from tafs.toyworld.prompts import CATEGORIES, PromptSpec, prompt_set, vocabulary
from tafs.toyworld.render import render


@dataclass(frozen=True)
class PretrainConfig:
    seed: int = 0
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    cfg_dropout: float = 0.1
    logit_mean: float = 0.0
    logit_std: float = 1.0
    grad_clip: float = 1.0
    checkpoint_every: int = 250
    # Relative sampling weight of each prompt category (missing = 1): multi-object prompts need more data.
    category_weights: dict = field(default_factory=dict)
    model: ToyModelConfig = field(default_factory=ToyModelConfig)


def sample_batch(specs_by_cat: dict[str, list[PromptSpec]], batch: int, rng: np.random.Generator,
                 weights: dict[str, float] | None = None) -> list[PromptSpec]:
    """Draw prompt specs: a category by weight, then a prompt uniformly within it."""
    cats = list(specs_by_cat)
    w = np.array([float((weights or {}).get(c, 1.0)) for c in cats])
    picks = rng.choice(len(cats), size=batch, p=w / w.sum())
    return [specs_by_cat[cats[i]][rng.integers(len(specs_by_cat[cats[i]]))] for i in picks]


class Pretrainer:
    def __init__(self, cfg: PretrainConfig, out_dir: Path, ckpt_dir: Path):
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        self.cfg, self.out_dir, self.ckpt_dir = cfg, Path(out_dir), Path(ckpt_dir)
        seed_everything(cfg.seed)
        self.model = build_toy(cfg.model, vocabulary(), seed=cfg.seed)
        self.params = [*self.model.transformer.parameters(), *self.model.text_encoder.parameters()]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
        self.sched = get_scheduler("cosine", self.opt, num_warmup_steps=cfg.warmup_steps,
                                   num_training_steps=cfg.steps)
        self.ema = EMAModel(self.params, decay=cfg.ema_decay, use_ema_warmup=True, power=0.75)
        self.specs = {c: prompt_set("train", [c]) for c in CATEGORIES}
        unknown = sorted(set(cfg.category_weights) - set(CATEGORIES))
        if unknown:
            raise ValueError(f"pretrain.category_weights: unknown categories {unknown}; expected {list(CATEGORIES)}")
        self.step = 0

    # -- checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        state = {
            "step": self.step,
            "transformer": self.model.transformer.state_dict(),
            "text_encoder": self.model.text_encoder.state_dict(),
            "ema": self.ema.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
        }
        save_checkpoint(self.ckpt_dir, state, asdict(self.cfg))

    def try_resume(self) -> bool:
        state = load_checkpoint(self.ckpt_dir, asdict(self.cfg))
        if state is None:
            return False
        self.model.transformer.load_state_dict(state["transformer"])
        self.model.text_encoder.load_state_dict(state["text_encoder"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.step = state["step"]
        return True

    # -- training ----------------------------------------------------------------------------------
    def train_step(self) -> float:
        from diffusers.training_utils import compute_density_for_timestep_sampling

        cfg = self.cfg
        rng, gen = step_generators(cfg.seed, self.step)
        specs = sample_batch(self.specs, cfg.batch_size, rng, cfg.category_weights)
        x0 = self.model.encode_images(render(specs, rng))
        texts = [s.text if rng.random() >= cfg.cfg_dropout else "" for s in specs]
        eps = torch.randn(x0.shape, generator=gen)
        torch.manual_seed(int(rng.integers(2**62)))  # compute_density_... uses the global generator
        sigma = compute_density_for_timestep_sampling("logit_normal", cfg.batch_size,
                                                      logit_mean=cfg.logit_mean, logit_std=cfg.logit_std)
        xt = flow.interpolate(x0, eps, sigma)
        cond = self.model.encode(texts)
        if self.cfg.model.prediction == "x0":
            loss = torch.nn.functional.mse_loss(self.model.predict_x0(xt, sigma, cond), x0)
        else:
            loss = torch.nn.functional.mse_loss(self.model.velocity(xt, sigma, cond), flow.velocity_target(x0, eps))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        self.ema.step(self.params)
        self.step += 1
        return loss.item()

    def run(self, resume: bool = True) -> dict:
        resumed = resume and self.try_resume()
        t0, losses = time.time(), []
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc="pretrain", unit="step", mininterval=5)
        while self.step < self.cfg.steps:
            losses.append(self.train_step())
            bar.update(1)
            if self.step % 50 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps:
                self.save_checkpoint()
        bar.close()
        return {"final_loss": float(np.mean(losses[-100:])) if losses else None,
                "wall_s": time.time() - t0, "resumed": resumed, "steps": self.step,
                "images_seen": self.step * self.cfg.batch_size}

    def export(self, metrics: dict) -> None:
        """Write the EMA weights as a hub-layout model folder, atomically (folder rename)."""
        self.ema.store(self.params)
        self.ema.copy_to(self.params)
        with atomic_dir(self.out_dir) as tmp:
            self.model.save(tmp)
            write_json(tmp / "pretrain_metrics.json", {**metrics, "config": asdict(self.cfg)})
        self.ema.restore(self.params)


def build_parser():
    import argparse

    p = argparse.ArgumentParser(prog="tafs pretrain", description="rectified-flow pretraining of the toy base model")
    p.add_argument("--cfg", default="{}", help="JSON of the `pretrain` config section")
    p.add_argument("--out", required=True, help="model folder (hub layout) to write")
    p.add_argument("--ckpt-dir", required=True, help="resumable checkpoints (keep outside Snakemake outputs)")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    return p


def main(argv: list[str] | None = None) -> dict:
    import logging

    from tafs.config import from_dict, parse_json_arg

    a = build_parser().parse_args(argv)
    torch.set_num_threads(max(1, a.threads))
    cfg = from_dict(PretrainConfig, parse_json_arg(a.cfg, "pretrain"), "pretrain")
    trainer = Pretrainer(cfg, Path(a.out), Path(a.ckpt_dir))
    metrics = trainer.run(resume=not a.no_resume)
    trainer.export(metrics)
    logging.getLogger("tafs").info("pretrained %d steps in %.0f s -> %s", metrics["steps"], metrics["wall_s"], a.out)
    return metrics
