"""The toy world's two tasks (DESIGN §11), on GenEval-like prompts over shapes and colours.

- ``toy_preference`` (the embedded default; the paper's human-preference task): trained on the dense score
  and the learned toy CLIP (in-domain), strict accuracy held out (out-of-domain).
- ``toy_composition`` (the paper's composition task, Table 1): trained on the checker's dense score;
  strict accuracy and the dense score in-domain, the learned toy CLIP held out.

Prompt files carry each prompt's toy spec as metadata (``objects``, ``relation``) and its category.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tafs.prompts import Prompt
from tafs.rewards.toy import spec_from_metadata
from tafs.tasks.base import BuiltModel, MetricSpec, TaskSpec
from tafs.toyworld.prompts import CATEGORIES, PromptSpec, prompt_set, spec_to_dict

STRICT = "Strict acc. (GenEval-like)"
DENSE = "Dense score (PickScore-like)"
CLIP = "Toy CLIP score"


def to_prompt(spec: PromptSpec) -> Prompt:
    meta = spec_to_dict(spec)
    return Prompt(meta.pop("text"), {"objects": meta["objects"], "relation": meta["relation"]}, spec.category)


def toy_prompts(split: str) -> list[Prompt]:
    """Every prompt of a split (held-out combinations in test), category by category."""
    return [to_prompt(s) for s in prompt_set(split)]


def chance_scores(prompts: Sequence[Prompt], seed: int) -> dict[str, float]:
    """Scores of a correct image of ANOTHER prompt of the same category (the floor of dense scores)."""
    from tafs.toyworld.evaluator import evaluate_images  # torch: imported here, not when the DAG reads the task
    from tafs.toyworld.render import render

    specs = [PromptSpec(p.category or "", spec_from_metadata(p.metadata).objects, p.metadata.get("relation"))
             for p in prompts]
    rng = np.random.default_rng(seed)
    images = render(specs, rng)
    idx = np.arange(len(specs))
    texts = [p.text for p in prompts]
    for i, spec in enumerate(specs):
        others = [j for j, o in enumerate(specs) if o.category == spec.category and texts[j] != texts[i]]
        if others:
            idx[i] = others[int(rng.integers(len(others)))]
    scores = evaluate_images(specs, images[idx])
    return {"correct": float(np.mean([s.correct for s in scores])), "dense": float(np.mean([s.dense for s in scores]))}


# What the toy world builds in the DAG (tafs.tasks.toy_commands): its base, pretrained by rectified flow when
# `model.pretrained: null` (config `pretrain:`), and its learned CLIP-like scorer for `reward_models.clip.path: null`
# (config `scorer:`).
BUILDS = (BuiltModel("base", "pretrain", "pretrain", "base", "pretrain_metrics.json", resumes=True),
          BuiltModel("clip_scorer", "train-scorer", "scorer", "reward:clip", "scorer_metrics.json"))
_COMMON = dict(generator="tafs.tasks.toy:toy_prompts", categories=CATEGORIES, category_metric="correct",
               category_label="strict acc. by category (%)", chance="tafs.tasks.toy:chance_scores",
               caption_prefix="Toy analogue of", headline="correct", builds=BUILDS)

TASKS = {
    "shapes_clip": TaskSpec(
        name="shapes_clip",
        description="toy world's shape prompts scored by a CLIP only (any image size: real models on a cluster)",
        rewards={"clip": 1.0},
        metrics=(MetricSpec("clip", "clip", "in", "CLIP score"),),
        generator="tafs.tasks.toy:toy_prompts", categories=CATEGORIES, category_metric="clip",
        category_label="CLIP score by category", builds=BUILDS),
    "toy_preference": TaskSpec(
        name="toy_preference",
        description="toy shapes world, human-preference analogue (Tables 2-7): trained on the dense score + "
                    "the learned toy CLIP, strict accuracy held out",
        rewards={"toy_dense": 1.0, "clip": 1.0},
        metrics=(MetricSpec("correct", "toy_correct", "out", STRICT, True),
                 MetricSpec("dense", "toy_dense", "in", DENSE, True),
                 MetricSpec("clip", "clip", "in", CLIP)),
        table1_task="toy_composition", **_COMMON),
    "toy_composition": TaskSpec(
        name="toy_composition",
        description="toy shapes world, composition analogue (Table 1, GenEval): trained on the checker's "
                    "dense score, strict accuracy in-domain, the learned toy CLIP held out",
        rewards={"toy_dense": 1.0},
        metrics=(MetricSpec("correct", "toy_correct", "in", STRICT, True),
                 MetricSpec("dense", "toy_dense", "in", DENSE, True),
                 MetricSpec("clip", "clip", "out", CLIP)),
        **_COMMON),
}
