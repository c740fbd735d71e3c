"""A tiny learned CLIP-like image-text scorer for the shapes world (the toy stand-in for CLIP).

The programmatic checker plays PickScore/GenEval; this scorer is a *learned* reward that can be
hacked, as a real CLIP can. It is a real (tiny) ``transformers.CLIPModel`` trained contrastively on
ground-truth renders of train-split prompts and saved in the hub layout, so the ``clip`` reward
loads it with the very code that loads ``openai/clip-vit-large-patch14``.

Hard negatives: every batch holds distinct prompts of ONE category (cycling through the
categories), so the in-batch negatives differ only in counts, colours, shapes or positions.

``python -m tafs.toyworld.scorer --cfg '{}' --out DIR --threads 2``
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from tafs.io import atomic_dir, write_json
from tafs.models.toy import build_tokenizer
from tafs.rewards.clip_score import ClipScorer, preprocess
from tafs.rewards.base import Reward
from tafs.seeding import seed_everything, step_generators
from tafs.toyworld.evaluator import evaluate_images
from tafs.toyworld.prompts import CATEGORIES, PromptSpec, prompt_set, split_specs, vocabulary
from tafs.toyworld.render import IMAGE_SIZE, render

log = logging.getLogger("tafs.scorer")

_INVERSE = {"right of": "left of", "below": "above"}


@dataclass(frozen=True)
class ScorerConfig:
    seed: int = 0
    # Deliberately short: the task is easy and 1500 steps at lr 1e-3 rank 98% of held-out pairs right.
    # We want an informative but imperfect (hackable) learned reward: 250 steps at 1e-4 rank ~92%
    # (~85% on position, ~87% on two_object), stable across seeds.
    steps: int = 250
    batch_size: int = 32  # capped by the number of distinct prompts of the batch's category
    lr: float = 1e-4
    warmup_steps: int = 30
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    patch_size: int = 4
    vision_dim: int = 96
    vision_layers: int = 3
    vision_heads: int = 4
    text_dim: int = 64
    text_layers: int = 2
    text_heads: int = 2
    projection_dim: int = 64
    max_tokens: int = 12  # the toy tokenizer's length (bos + 8 words + eos fits)
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    eval_trials: int = 20  # (correct render, other prompt's render) pairs per test prompt


class Scorer(NamedTuple):
    model: object  # transformers.CLIPModel
    tokenizer: object
    processor: object  # transformers.CLIPImageProcessor

    def reward(self, device: str = "cpu", batch_size: int = 256) -> Reward:
        return ClipScorer(self.model, self.tokenizer, self.processor, device=device, batch_size=batch_size)


# -- model -----------------------------------------------------------------------------------------

def build_scorer(cfg: ScorerConfig) -> Scorer:
    """A freshly initialised tiny CLIPModel, the toy tokenizer and a 32 px image processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = build_tokenizer(vocabulary(), cfg.max_tokens)
    text = dict(vocab_size=len(tokenizer), hidden_size=cfg.text_dim, intermediate_size=4 * cfg.text_dim,
                num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads,
                max_position_embeddings=cfg.max_tokens, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    vision = dict(image_size=IMAGE_SIZE, patch_size=cfg.patch_size, hidden_size=cfg.vision_dim,
                  intermediate_size=4 * cfg.vision_dim, num_hidden_layers=cfg.vision_layers,
                  num_attention_heads=cfg.vision_heads, num_channels=3)
    torch.manual_seed(cfg.seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=cfg.projection_dim))
    processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                   crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                   image_mean=list(cfg.image_mean), image_std=list(cfg.image_std))
    _check_prompts_fit(tokenizer, cfg.max_tokens)
    return Scorer(model, tokenizer, processor)


def _check_prompts_fit(tokenizer, max_tokens: int) -> None:
    longest = max((s.text for s in prompt_set("all")), key=lambda t: len(tokenizer(t)["input_ids"]))
    n = len(tokenizer(longest)["input_ids"])
    if n > max_tokens:
        raise ValueError(f"scorer.max_tokens={max_tokens} but {longest!r} needs {n} tokens")


# -- data ------------------------------------------------------------------------------------------

def canonical(spec: PromptSpec) -> tuple:
    """A key equal for prompts with the same meaning ("a ring right of a cross" == "a cross left of a ring")."""
    objs, rel = spec.objects, spec.relation
    if rel in _INVERSE:
        objs, rel = (objs[1], objs[0], *objs[2:]), _INVERSE[rel]
    return spec.category, objs, rel


def category_batch(specs: list[PromptSpec], size: int, rng: np.random.Generator) -> list[PromptSpec]:
    """Up to ``size`` prompts of one category, no two with the same meaning (CLIP's loss has one
    positive per row: a paraphrase in the batch would be a false negative)."""
    seen, out = set(), []
    for i in rng.permutation(len(specs)):
        key = canonical(specs[i])
        if key not in seen:
            seen.add(key)
            out.append(specs[i])
            if len(out) == size:
                break
    return out


# -- training --------------------------------------------------------------------------------------

def fit_scorer(cfg: ScorerConfig, progress: bool = True) -> tuple[Scorer, dict]:
    """Train contrastively; returns the scorer and training stats (wall time, losses)."""
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    seed_everything(cfg.seed)
    scorer = build_scorer(cfg)
    model, tokenizer, processor = scorer
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, min(cfg.warmup_steps, cfg.steps), max(cfg.steps, 1))
    by_cat = {c: prompt_set("train", [c]) for c in CATEGORIES}
    losses: list[float] = []
    t0 = time.time()
    bar = tqdm(range(cfg.steps), desc="scorer", unit="step", mininterval=5, disable=not progress)
    for step in bar:
        rng, _ = step_generators(cfg.seed, step)
        specs = category_batch(by_cat[CATEGORIES[step % len(CATEGORIES)]], cfg.batch_size, rng)
        pixels = preprocess(render(specs, rng), processor)  # the reward's own preprocessing
        tok = tokenizer([s.text for s in specs], padding="max_length", max_length=cfg.max_tokens,
                        truncation=True, return_tensors="pt")
        loss = model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], pixel_values=pixels,
                     return_loss=True).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 50 == 49:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    bar.close()
    model.eval()
    stats = {"wall_s": time.time() - t0, "steps": cfg.steps, "threads": torch.get_num_threads(),
             "final_loss": float(np.mean(losses[-60:])) if losses else None,  # 10 batches per category
             "logit_scale": float(model.logit_scale.detach().exp())}
    return scorer, stats


# -- held-out quality ------------------------------------------------------------------------------

def _distractor(spec: PromptSpec, pool: list[PromptSpec], rng: np.random.Generator,
                max_tries: int = 100) -> torch.Tensor:
    """A correct render of another prompt of the category that does NOT satisfy ``spec``.

    Renders that happen to satisfy ``spec`` too (a paraphrase, or an "above" layout that is also
    "left of") are redrawn: ranking them would test nothing.
    """
    others = [o for o in pool if o.text != spec.text]
    for _ in range(max_tries):
        other = others[int(rng.integers(len(others)))]
        image = render([other], rng)
        if evaluate_images([spec], image)[0].correct == 0.0:
            return image[0]
    raise RuntimeError(f"no render of another prompt fails {spec.text!r} after {max_tries} tries")


def ranking_report(reward_fn: Reward, split: str = "test", n: int = 20, seed: int = 0) -> dict:
    """How often ``reward(prompt, its correct render) > reward(prompt, another prompt's render)``.

    For each prompt of ``split``: ``n`` pairs of a fresh correct render and a render of another
    prompt of the same category (any split) that the checker says is wrong for this prompt. Ties
    count half. Chance is 0.5. Returns overall and per-category accuracy.
    """
    rng = np.random.default_rng([seed, 7919])
    specs = prompt_set(split)
    pools = {c: split_specs(c, "all") for c in CATEGORIES}
    rep = [s for s in specs for _ in range(n)]
    pos = render(rep, rng)
    neg = torch.stack([_distractor(s, pools[s.category], rng) for s in rep])
    texts = [s.text for s in rep]
    meta = [{}] * len(texts)  # a CLIP-like reward needs no metadata
    r_pos, r_neg = reward_fn(texts, meta, pos), reward_fn(texts, meta, neg)
    wins = ((r_pos > r_neg).float() + 0.5 * (r_pos == r_neg).float()).numpy()
    cats = np.array([s.category for s in rep])
    by_cat = {c: float(wins[cats == c].mean()) for c in CATEGORIES if (cats == c).any()}
    return {"overall": float(wins.mean()), "by_category": by_cat, "pairs": len(rep), "split": split,
            "margin": float((r_pos - r_neg).mean())}


def ranking_accuracy(reward_fn: Reward, split: str = "test", n: int = 20, seed: int = 0) -> float:
    """Overall pairwise ranking accuracy (see ``ranking_report``)."""
    return ranking_report(reward_fn, split, n, seed)["overall"]


# -- saving ----------------------------------------------------------------------------------------

def save_scorer(scorer: Scorer, out_dir: str | Path, metrics: dict) -> None:
    """Hub layout (config.json + model.safetensors, tokenizer, preprocessor_config.json), atomically."""
    with atomic_dir(out_dir) as tmp:
        scorer.model.save_pretrained(tmp, safe_serialization=True)
        scorer.tokenizer.save_pretrained(tmp)
        scorer.processor.save_pretrained(tmp)
        write_json(tmp / "scorer_metrics.json", metrics)


def train_scorer(cfg: ScorerConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Train, measure held-out ranking accuracy, save to ``out_dir``; returns the metrics written."""
    scorer, stats = fit_scorer(cfg, progress)
    reward = scorer.reward()
    metrics = {**stats,
               "ranking_test": ranking_report(reward, "test", cfg.eval_trials, cfg.seed),
               "ranking_train": ranking_report(reward, "train", max(1, cfg.eval_trials // 4), cfg.seed),
               "config": asdict(cfg)}
    save_scorer(scorer, out_dir, metrics)
    return metrics


# -- CLI -------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tafs train-scorer", description="train the toy CLIP-like scorer")
    p.add_argument("--cfg", default="{}", help="JSON of the `scorer` config section")
    p.add_argument("--out", required=True, help="model folder (hub layout) to write")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> dict:
    from tafs.config import from_dict, parse_json_arg

    a = build_parser().parse_args(argv)
    torch.set_num_threads(max(1, a.threads))
    cfg = from_dict(ScorerConfig, parse_json_arg(a.cfg, "scorer"), "scorer")
    m = train_scorer(cfg, Path(a.out), progress=not a.no_progress)
    log.info("scorer: %d steps in %.0f s, test ranking accuracy %.3f %s -> %s", cfg.steps, m["wall_s"],
             m["ranking_test"]["overall"], json.dumps(m["ranking_test"]["by_category"]), a.out)
    return m


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    main()
