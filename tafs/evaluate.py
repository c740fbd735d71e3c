"""Sample a prompt set at a given NFE, score it, write ``metrics.json`` and an image grid.

Each image index gets the same initial noise whatever the model, so comparisons are paired.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from tafs.io import write_json
from tafs.metrics import by_category, mean_ci
from tafs.models.backbone import Backbone
from tafs.sampling.annealed import sample_annealed
from tafs.sampling.ode import sample_ode
from tafs.toyworld.evaluator import evaluate_images
from tafs.toyworld.prompts import CATEGORIES, PromptSpec, prompt_set
from tafs.toyworld.render import render

SAMPLERS = ("ode", "annealed")


@dataclass(frozen=True)
class EvalConfig:
    sampler: str = "ode"
    nfe: int = 28
    per_category: int = 64
    split: str = "test"
    seed: int = 1234
    batch_size: int = 128
    cfg_scale: float = 1.0
    shift: float = 1.0
    # Learned scorers reported beside the checker's scores: reward name -> factory kwargs, e.g.
    # {"clip": {"path": "results/models/clip_scorer"}} (tafs.rewards.registry).
    scorers: dict = field(default_factory=dict)


def eval_specs(split: str, per_category: int) -> list[PromptSpec]:
    """``per_category`` prompts per category, cycling through that category's prompts."""
    out = []
    for c in CATEGORIES:
        pool = prompt_set(split, [c])
        out += [pool[i % len(pool)] for i in range(per_category)]
    return out


@torch.no_grad()
def generate(backbone: Backbone, specs: list[PromptSpec], cfg: EvalConfig, progress: bool = True) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1] for the specs, with the configured sampler and NFE."""
    if cfg.sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {cfg.sampler!r}")
    gen = torch.Generator().manual_seed(cfg.seed)
    noise_all = torch.randn((len(specs), *backbone.latent_shape), generator=gen)
    null = backbone.encode([""]) if cfg.cfg_scale != 1.0 else None
    out = []
    starts = range(0, len(specs), cfg.batch_size)
    for i in tqdm(starts, desc=f"{cfg.sampler}@{cfg.nfe}", disable=not progress, mininterval=5):
        batch = specs[i:i + cfg.batch_size]
        cond = backbone.encode([s.text for s in batch])
        noise = noise_all[i:i + len(batch)].to(backbone.device)
        if cfg.sampler == "ode":
            x0 = sample_ode(backbone, cond, noise, cfg.nfe, cfg.shift, null, cfg.cfg_scale)
        else:
            g = torch.Generator(device=backbone.device).manual_seed(cfg.seed + 1 + i)
            x0 = sample_annealed(backbone, cond, noise, cfg.nfe - 1, g, cfg.shift).final
        out.append(backbone.decode(x0).cpu())
    return torch.cat(out)


def chance_scores(specs: list[PromptSpec], seed: int) -> dict[str, float]:
    """Scores of a correct image of ANOTHER prompt of the same category (the floor of dense scores)."""
    rng = np.random.default_rng(seed)
    images = render(specs, rng)
    idx = np.arange(len(specs))
    for i, spec in enumerate(specs):
        others = [j for j, o in enumerate(specs) if o.category == spec.category and o.text != spec.text]
        if others:
            idx[i] = others[int(rng.integers(len(others)))]
    scores = evaluate_images(specs, images[idx])
    return {"correct": float(np.mean([s.correct for s in scores])), "dense": float(np.mean([s.dense for s in scores]))}


def _stat(cats: list[str], vals: list[float]) -> dict:
    return {**mean_ci(vals), "by_category": by_category(cats, vals)}


def summarize(specs: list[PromptSpec], images: torch.Tensor, scorers: dict | None = None) -> dict:
    """The checker's strict and dense scores, plus each learned scorer's, with CIs and per category."""
    scores = evaluate_images(specs, images)
    cats = [s.category for s in specs]
    out = {key: _stat(cats, [getattr(s, key) for s in scores]) for key in ("correct", "dense")}
    texts = [s.text for s in specs]
    for name, fn in (scorers or {}).items():
        out[name] = _stat(cats, [float(v) for v in fn(texts, images)])
    return out


def build_scorers(cfg: EvalConfig) -> dict:
    from tafs.rewards.registry import build

    return {name: build(name, **kwargs) for name, kwargs in cfg.scorers.items()}


def evaluate(backbone: Backbone, cfg: EvalConfig, model_name: str, out_dir: Path,
             progress: bool = True, scorers: dict | None = None) -> dict:
    """Sample, score, and write ``metrics.json`` + ``grid.png`` into ``out_dir``."""
    from tafs.report.grid import save_grid

    specs = eval_specs(cfg.split, cfg.per_category)
    if scorers is None:
        scorers = build_scorers(cfg)
    t0 = time.time()
    images = generate(backbone, specs, cfg, progress)
    wall = time.time() - t0
    metrics = {
        "model": model_name, "sampler": cfg.sampler, "nfe": cfg.nfe, "n": len(specs),
        "metrics": summarize(specs, images, scorers), "chance": chance_scores(specs, cfg.seed),
        "wall_s": wall, "config": asdict(cfg),
    }
    out_dir = Path(out_dir)
    save_grid(images, specs, out_dir / "grid.png", title=f"{model_name} · {cfg.sampler} · {cfg.nfe} NFE")
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def sweep(backbone: Backbone, cfg: EvalConfig, nfes: list[int], model_name: str, out_root: Path,
          progress: bool = True) -> list[dict]:
    """``evaluate`` at every NFE (one process: the model and scorers load once), into ``out_root/nfe{n}/``."""
    bad = [n for n in nfes if n < 1]
    if bad:
        raise ValueError(f"NFE must be >= 1, got {bad}")
    scorers = build_scorers(cfg)
    return [evaluate(backbone, replace(cfg, nfe=n), model_name, Path(out_root) / f"nfe{n}", progress, scorers)
            for n in nfes]
