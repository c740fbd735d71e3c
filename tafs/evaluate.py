"""Sample a prompt file at given NFEs, score the images with the task's metrics, write ``metrics.json`` + a grid.

Each image index gets the same initial noise whatever the model, so comparisons between models are paired.
The metrics are named rewards (``EvalConfig.metrics``: metric key -> reward name), so nothing here knows
which task it evaluates.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from tafs import flow
from tafs.config import redact
from tafs.eval_shards import ShardJob, score
from tafs.io import write_json
from tafs.models.backbone import Backbone
from tafs.prompts import Prompt, by_category, check_metadata
from tafs.rewards.base import Reward
from tafs.sampling.annealed import sample_annealed
from tafs.sampling.ode import sample_ode
from tafs.stats import by_category as stats_by_category
from tafs.stats import category_mean_ci, mean_ci

log = logging.getLogger(__name__)

SAMPLERS = ("ode", "annealed")
ODE_GRIDS = ("scheduler", "linspace")


@dataclass(frozen=True)
class EvalConfig:
    sampler: str = "ode"
    nfe: int = 28
    per_category: int | None = None  # set: this many images per category, cycling through its prompts
    images_per_prompt: int = 1  # each selected prompt is sampled this many times (GenEval: 4)
    split: str = "test"  # which of the task's prompt files the DAG evaluates
    seed: int = 1234
    batch_size: int = 128
    decode_chunk: int = 0  # decode this many latents at a time (0: a whole batch)
    cfg_scale: float = 1.0
    shift: float | None = None  # the samplers' time shift; None: the model's own
    ode_grid: str = "scheduler"  # the Euler ODE's noise levels (ODE_GRIDS; see ode_grid)
    metrics: dict = field(default_factory=dict)  # metric key -> reward name (the task's metrics)
    category_mean: list = field(default_factory=list)  # metric keys averaged over categories (GenEval overall)
    reward_kwargs: dict = field(default_factory=dict)  # reward name -> factory kwargs (config reward_models)
    chance: str | None = None  # "module:function(prompts, seed)": the task's chance levels, if it has any
    shard_size: int = 128  # images per resumable shard (tafs.eval_shards); a multiple of batch_size keeps batches
    rewards_after_generation: bool = False  # build each reward model per shard after sampling, one at a time

    def __post_init__(self) -> None:
        if self.ode_grid not in ODE_GRIDS:
            raise ValueError(f"ode_grid must be one of {ODE_GRIDS}, got {self.ode_grid!r}")


def select_prompts(prompts: Sequence[Prompt], per_category: int | None, images_per_prompt: int = 1) -> list[Prompt]:
    """The evaluation list: every prompt, or ``per_category`` per category cycling through its prompts;
    then each one ``images_per_prompt`` times in a row."""
    if per_category:
        chosen = [pool[i % len(pool)] for pool in by_category(prompts).values() for i in range(per_category)]
    else:
        chosen = list(prompts)
    return [p for p in chosen for _ in range(images_per_prompt)]


def ode_grid(backbone: Backbone, cfg: EvalConfig) -> torch.Tensor:
    """The Euler ODE's nfe + 1 noise levels. "scheduler": the model's own (``backbone.scheduler_sigmas``, what its
    diffusers pipeline samples with at ``num_inference_steps=nfe``), or with an explicit ``cfg.shift``
    ``FlowMatchEulerDiscreteScheduler``'s rule at that shift; "linspace": shift(linspace(1, 0, nfe + 1))."""
    if cfg.ode_grid == "linspace":
        return flow.ode_sigmas(cfg.nfe, backbone.default_shift if cfg.shift is None else cfg.shift)
    return backbone.scheduler_sigmas(cfg.nfe) if cfg.shift is None else flow.scheduler_sigmas(cfg.nfe, cfg.shift)


@torch.no_grad()
def generate(backbone: Backbone, texts: Sequence[str], cfg: EvalConfig, progress: bool = True,
             span: range | None = None) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1] for the texts (those in ``span`` only, when given), with the configured
    sampler and NFE; image i has the same noise whatever the span."""
    if cfg.sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {cfg.sampler!r}")
    gen = torch.Generator().manual_seed(cfg.seed)
    noise_all = torch.randn((len(texts), *backbone.latent_shape), generator=gen)
    null = backbone.encode([""]) if cfg.cfg_scale != 1.0 else None
    shift = backbone.default_shift if cfg.shift is None else cfg.shift
    grid = ode_grid(backbone, cfg) if cfg.sampler == "ode" else None
    out = []
    span = range(len(texts)) if span is None else span
    starts = range(span.start, span.stop, cfg.batch_size)
    for i in tqdm(starts, desc=f"{cfg.sampler}@{cfg.nfe}", disable=not progress, mininterval=5):
        batch = list(texts[i:min(i + cfg.batch_size, span.stop)])
        cond = backbone.encode(batch)
        noise = noise_all[i:i + len(batch)].to(backbone.device)
        if cfg.sampler == "ode":
            x0 = sample_ode(backbone, cond, noise, cfg.nfe, sigmas=grid, null=null, cfg_scale=cfg.cfg_scale)
        else:
            g = torch.Generator(device=backbone.device).manual_seed(cfg.seed + 1 + i)
            x0 = sample_annealed(backbone, cond, noise, cfg.nfe - 1, g, shift).final
        out.append(backbone.decode(x0, cfg.decode_chunk).cpu())
    return torch.cat(out)


def build_rewards(cfg: EvalConfig) -> dict[str, Reward]:
    """One reward object per metric; metrics that share a reward share the (loaded once) object."""
    from tafs.rewards import registry

    built: dict[str, Reward] = {}
    for name in dict.fromkeys(cfg.metrics.values()):
        built[name] = registry.build(name, **cfg.reward_kwargs.get(name, {}))
    return {key: built[name] for key, name in cfg.metrics.items()}


def summarize(prompts: Sequence[Prompt], images: torch.Tensor, rewards: Mapping[str, Reward],
              category_mean: Sequence[str] = ()) -> dict:
    """Each metric: mean with its 95 % CI over images, and per category when the prompts have categories."""
    texts, meta = [p.text for p in prompts], [p.metadata for p in prompts]
    return summarize_scores(prompts, score(texts, meta, images, rewards), category_mean)


def summarize_scores(prompts: Sequence[Prompt], scores: Mapping[str, Sequence[float]],
                     category_mean: Sequence[str] = ()) -> dict:
    """``summarize`` from per-image scores (metric key -> one score per prompt)."""
    cats = [p.category for p in prompts]
    n = len(prompts)
    out = {}
    for key, vals in scores.items():
        vals = [float(v) for v in vals]
        ok = [i for i, v in enumerate(vals) if not math.isnan(v)]  # NaN: the reward could not score it
        vals, kept_cats = [vals[i] for i in ok], [cats[i] for i in ok]
        overall = category_mean_ci(kept_cats, vals) if key in category_mean and None not in cats else \
            mean_ci(vals, "normal")
        out[key] = {**overall.as_dict(),
                    "by_category": stats_by_category(kept_cats, vals) if None not in cats else {}}
        if len(ok) < n:
            out[key]["invalid"] = n - len(ok)  # reported in the tables' notes, never scored
            log.warning("metric %s: %d of %d images could not be scored (excluded from the mean)", key,
                        n - len(ok), n)
    return out


def _chance(ref: str | None) -> Callable | None:
    if not ref:
        return None
    from tafs.tasks.base import resolve_callable

    return resolve_callable(ref, "eval.chance")


# (texts, cfg, progress, span) -> images in [0, 1] of the texts in span (image i seeded by its index in texts)
ImagesFn = Callable[[Sequence[str], EvalConfig, bool, range], torch.Tensor]
GRID_PER_ROW = 8


def _scorer(cfg: EvalConfig, rewards: Mapping[str, Reward] | None) -> Callable:
    """Scores a shard: with resident ``rewards``, or (``rewards_after_generation``) each reward built then freed."""
    from tafs.eval_shards import score_one_at_a_time
    from tafs.rewards import registry

    if rewards is None and cfg.rewards_after_generation:
        return lambda texts, meta, images: score_one_at_a_time(
            texts, meta, images, cfg.metrics, lambda n: registry.build(n, **cfg.reward_kwargs.get(n, {})))
    resident: dict[str, Mapping[str, Reward]] = {} if rewards is None else {"r": rewards}

    def scorer(texts: Sequence[str], meta: Sequence, images: torch.Tensor) -> dict:
        if not resident:  # built at the first shard to score: a fully resumed point loads none
            resident["r"] = build_rewards(cfg)
        return score(texts, meta, images, resident["r"])

    return scorer


def evaluate(images_fn: ImagesFn, prompts: Sequence[Prompt], cfg: EvalConfig, model_name: str, out_dir: Path,
             progress: bool = True, rewards: Mapping[str, Reward] | None = None,
             info: Mapping[str, str] | None = None, job: ShardJob | None = None) -> dict:
    """Sample the evaluation list of ``prompts`` with ``images_fn``, score it, write ``metrics.json`` + ``samples.png``
    into ``out_dir``, shard by shard (``out_dir/shards``: a re-run resumes, tafs.eval_shards). ``rewards``:
    resident reward objects; None builds them (or, with ``cfg.rewards_after_generation``, one at a time per
    shard). ``images_fn`` is one of our samplers on a backbone, or a diffusers pipeline's own call.
    ``info``: strings about the model recorded as they are (``model_commit``: the hub commit it was fetched at).
    ``job``: a scatter job (``eval.shard_jobs`` > 1) samples only its shards and writes no metrics.json (the gather
    job does: ``write_point``); it returns the shards it owns."""
    from tafs.eval_shards import ShardStore, identity_of, make_shards, spans
    from tafs.report.image_grid import pick_rows

    chosen = select_prompts(prompts, cfg.per_category, cfg.images_per_prompt)
    texts = [p.text for p in chosen]
    which = None if job is None else job.shards(cfg.sampler, cfg.nfe, len(spans(len(chosen), cfg.shard_size)))
    made = make_shards(lambda span: images_fn(texts, cfg, progress, span), chosen, identity_of(model_name, info, cfg),
                       cfg.shard_size, ShardStore(out_dir), _scorer(cfg, rewards), pick_rows(chosen, GRID_PER_ROW), which)
    if job is not None:
        return {"model": model_name, "sampler": cfg.sampler, "nfe": cfg.nfe, "shards": which, "generated": made}
    return write_point(chosen, cfg, model_name, Path(out_dir), info)


def write_point(chosen: Sequence[Prompt], cfg: EvalConfig, model_name: str, out_dir: Path,
                info: Mapping[str, str] | None = None) -> dict:
    """``metrics.json`` + ``samples.png`` of one evaluation point from its shards on disk (no model, no reward)."""
    from tafs.eval_shards import ShardStore, gather_shards, identity_of
    from tafs.report.image_grid import save_grid

    scores, grid, wall = gather_shards(chosen, identity_of(model_name, info, cfg), cfg.shard_size,
                                       ShardStore(out_dir))
    metrics = {"model": model_name, **(info or {}), "sampler": cfg.sampler, "nfe": cfg.nfe, "n": len(chosen),
               "metrics": summarize_scores(chosen, scores, cfg.category_mean)}
    chance = _chance(cfg.chance)
    if chance is not None:
        metrics["chance"] = chance(chosen, cfg.seed)
    metrics.update(wall_s=wall, config=redact(asdict(cfg)))
    save_grid(grid, chosen, out_dir / "samples.png", title=f"{model_name} · {cfg.sampler} · {cfg.nfe} NFE",
              per_row=GRID_PER_ROW)
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def sweep_with(images_fn: ImagesFn, prompts: Sequence[Prompt], cfg: EvalConfig, nfes: list[int], model_name: str,
               out_root: Path, progress: bool = True, info: Mapping[str, str] | None = None,
               job: ShardJob | None = None) -> list[dict]:
    """``evaluate`` at every NFE (one process: the model and rewards load once), into ``out_root/nfe{n}/``; a
    scatter ``job``: only its shards."""
    from tafs.rewards import registry

    bad = [n for n in nfes if n < 1]
    if bad:
        raise ValueError(f"NFE must be >= 1, got {bad}")
    check_metadata(prompts, {r: registry.spec(r).needs for r in set(cfg.metrics.values())}, "evaluation prompts")
    rewards = None if cfg.rewards_after_generation else build_rewards(cfg)
    return [evaluate(images_fn, prompts, replace(cfg, nfe=n), model_name, Path(out_root) / f"nfe{n}", progress,
                     rewards, info, job) for n in nfes]


def sweep(backbone: Backbone, prompts: Sequence[Prompt], cfg: EvalConfig, nfes: list[int], model_name: str,
          out_root: Path, progress: bool = True, info: Mapping[str, str] | None = None,
          job: ShardJob | None = None) -> list[dict]:
    """A backbone's sweep with our samplers (``cfg.sampler``: the Euler ODE or the annealed chain)."""
    return sweep_with(lambda texts, c, p, span: generate(backbone, texts, c, p, span), prompts, cfg, nfes, model_name,
                      out_root, progress, info, job)
