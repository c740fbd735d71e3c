"""Programmatic, non-differentiable GenEval-style checker for the shapes world.

Per cell of the slot grid: pixels are labelled with the nearest palette colour (or background);
a cell with enough foreground is an object; its colour is the majority label (None when impure)
and its shape the template of best IoU (None below ``min_iou``). A spec is then checked by
matching its required objects to detected ones:

- constraints: the object count is exact; each required object is matched (shape, and colour when
  given) by a distinct detection; the relation holds for the matched pair.
- ``correct`` = all constraints hold (GenEval's strict score); ``dense`` = fraction that hold, times
  n_required / n_detected when there are extra objects (without it a policy learns to scatter many
  objects to match more required ones: a reward hack seen in a probe run).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from tafs.toyworld.prompts import PromptSpec
from tafs.toyworld.render import BACKGROUND, CELL, GRID, PALETTE, TEMPLATES, relation_holds

_LABELS = ["background", *PALETTE]
_COLORS = torch.tensor([BACKGROUND, *PALETTE.values()], dtype=torch.float32)  # (5, 3)
_TEMPL = {k: torch.from_numpy(v) for k, v in TEMPLATES.items()}


@dataclass(frozen=True)
class Detection:
    cell: int
    shape: str | None
    color: str | None


@dataclass(frozen=True)
class Score:
    correct: float
    dense: float


def detect(image: torch.Tensor, min_pixels: int = 8, min_iou: float = 0.6,
           min_purity: float = 0.75) -> list[Detection]:
    """Objects in one image (3, H, W) with values in [0, 1]."""
    return detect_batch(image[None], min_pixels, min_iou, min_purity)[0]


def detect_batch(images: torch.Tensor, min_pixels: int = 8, min_iou: float = 0.6,
                 min_purity: float = 0.75) -> list[list[Detection]]:
    """Objects in each image of a batch (B, 3, H, W) in [0, 1].

    Every cell of every image is labelled, counted and matched against the templates in a few tensor
    ops (the reward runs on every scored step of every sample, each iteration); only the
    Detection objects are built in Python.
    """
    img = images.detach().float().clamp(0, 1).permute(0, 2, 3, 1)  # B H W 3
    labels = ((img[..., None, :] - _COLORS) ** 2).sum(-1).argmin(-1)  # B H W
    b = labels.shape[0]
    cells = labels.reshape(b, GRID, CELL, GRID, CELL).permute(0, 1, 3, 2, 4).reshape(b, GRID * GRID, CELL, CELL)
    fg = cells > 0
    n_fg = fg.sum((-1, -2))  # B C
    counts = torch.nn.functional.one_hot(cells, len(_LABELS)).sum((-2, -3))  # B C L
    counts[..., 0] = 0  # background pixels do not vote
    major = counts.argmax(-1)
    pure = counts.gather(-1, major[..., None])[..., 0] >= min_purity * n_fg
    templ = torch.stack(list(_TEMPL.values()))  # T h w
    inter = (fg[:, :, None] & templ).sum((-1, -2))
    union = (fg[:, :, None] | templ).sum((-1, -2))
    ious = inter / union  # B C T
    best = ious.argmax(-1)
    shape_ok = ious.gather(-1, best[..., None])[..., 0] >= min_iou
    names = list(_TEMPL)
    out: list[list[Detection]] = []
    for i in range(b):
        dets = []
        for cell in torch.nonzero(n_fg[i] >= min_pixels).flatten().tolist():
            dets.append(Detection(cell, names[best[i, cell]] if shape_ok[i, cell] else None,
                                  _LABELS[major[i, cell]] if pure[i, cell] else None))
        out.append(dets)
    return out


def _matches(req, det: Detection) -> bool:
    return det.shape == req.shape and (req.color is None or det.color == req.color)


def score(spec: PromptSpec, detections: list[Detection]) -> Score:
    req = spec.objects
    count_ok = len(detections) == len(req)
    best_matched, rel_ok = 0, False
    # Brute force over injective assignments (<= 3 required objects, <= 16 detections).
    k = min(len(req), len(detections))
    for idx in itertools.permutations(range(len(detections)), k):
        assign = {i: detections[j] for i, j in enumerate(idx) if _matches(req[i], detections[j])}
        rel = (spec.relation is not None and 0 in assign and 1 in assign
               and relation_holds(spec.relation, assign[0].cell, assign[1].cell))
        if (len(assign), rel) > (best_matched, rel_ok):
            best_matched, rel_ok = len(assign), rel
    checks = [count_ok] + [True] * best_matched + [False] * (len(req) - best_matched)
    if spec.relation is not None:
        checks.append(rel_ok)
    extra_penalty = min(1.0, len(req) / len(detections)) if detections else 1.0
    return Score(correct=float(all(checks)), dense=extra_penalty * sum(checks) / len(checks))


def evaluate_images(specs: list[PromptSpec], images: torch.Tensor) -> list[Score]:
    """Score a batch of images (B, 3, H, W) in [0, 1] against their specs."""
    if len(specs) != len(images):
        raise ValueError(f"{len(specs)} specs but {len(images)} images")
    return [score(s, d) for s, d in zip(specs, detect_batch(images))]
