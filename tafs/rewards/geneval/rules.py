"""GenEval's rules on detections, as pure functions (no model): which detections count, and whether an image
satisfies a prompt's metadata (``tag``, ``include``, ``exclude``).

Re-implemented from (read, not copied):

* official GenEval, ``djghosh13/geneval`` ``evaluation/evaluate_images.py``: ``evaluate_image`` (per class:
  score > 0.3, or > 0.9 for counting prompts, best first, at most 16, greedy NMS only when ``max_overlap`` < 1,
  which GenEval's default 1.0 switches off), ``evaluate`` (``correct``) and ``relative_position``.
* the partial credit Flow-GRPO trains on: ``geneval_score`` in ``yifan123/flow_grpo`` ``flow_grpo/rewards.py``
  posts images to ``yifan123/reward-server``, whose ``reward_server/gen_eval.py`` (commit 92ac29f)
  ``evaluate_reward`` returns ``score`` (the training reward) and ``strict_correct``; see ``partial``.

Both see the same detections (thresholded with the prompt's tag), so one detector pass serves both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

# GenEval's object_names.txt: the 80 COCO classes in mmdet's class order, three of them renamed
# ("computer mouse", "tv remote", "computer keyboard" for COCO's "mouse", "remote", "keyboard").
CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush")
COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
POSITIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
TAGS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels (mmdet: x1, y1 one past the last pixel)


@dataclass(frozen=True)
class Detection:
    """One detected instance: GenEval class name, detector score, box, optional (H, W) bool mask at the
    image's resolution (array or tensor; the colour crop uses it) and, once classified, its colour."""

    cls: str
    score: float
    box: Box
    mask: Any = field(default=None, repr=False, compare=False)
    color: str | None = None


@dataclass(frozen=True)
class Thresholds:
    """GenEval's settings (``evaluate_images.py`` options, same defaults)."""

    threshold: float = 0.3  # detection score, strictly greater
    counting_threshold: float = 0.9  # the same for prompts tagged "counting"
    max_objects: int = 16  # per class, best first
    max_overlap: float = 1.0  # greedy per-class NMS IoU; 1.0 (GenEval's default) keeps every box
    position_threshold: float = 0.1  # margin, a fraction of the two objects' summed sizes

    def __post_init__(self) -> None:
        for name in ("threshold", "counting_threshold", "max_overlap", "position_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"geneval: {name} must be in [0, 1], got {value!r}")
        if self.max_objects < 1:
            raise ValueError(f"geneval: max_objects must be >= 1, got {self.max_objects!r}")

    def confidence(self, tag: str) -> float:
        return self.counting_threshold if tag == "counting" else self.threshold

    @property
    def lowest(self) -> float:
        """The lowest score that can count for any tag (a detector may drop everything below it)."""
        return min(self.threshold, self.counting_threshold)


@dataclass(frozen=True)
class Verdict:
    """``correct``: official GenEval (what its tables report); ``score``: Flow-GRPO's partial credit (what it
    trains on); ``exact``: Flow-GRPO's ``strict_correct`` (exact counts, no exclude check); ``reasons``: why
    not (official reasons first, then the partial credit's, prefixed "score:")."""

    correct: bool
    score: float
    reasons: list[str] = field(default_factory=list)
    exact: bool = False


Objects = dict[str, list[Detection]]


def iou(a: Box, b: Box) -> float:
    """GenEval's ``compute_iou`` (pixel-inclusive areas: width = x1 - x0 + 1)."""
    def area(x0: float, y0: float, x1: float, y1: float) -> float:
        return max(x1 - x0 + 1, 0) * max(y1 - y0 + 1, 0)

    inter = area(max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    union = area(*a) + area(*b) - inter
    return inter / union if union else 0.0


def select(detections: Iterable[Detection], tag: str, th: Thresholds = Thresholds()) -> Objects:
    """Per class, best first: score > threshold (the counting one for "counting" prompts), at most
    ``max_objects``, then greedy NMS at ``max_overlap`` (none at 1.0). Classes with nothing left are absent."""
    conf = th.confidence(tag)
    by_class: Objects = {}
    for det in detections:
        if det.score > conf:
            by_class.setdefault(det.cls, []).append(det)
    out: Objects = {}
    for cls, dets in by_class.items():
        ordered = sorted(dets, key=lambda d: -d.score)[:th.max_objects]
        kept: list[Detection] = []
        while ordered:
            best = ordered.pop(0)
            kept.append(best)
            if th.max_overlap < 1:
                ordered = [d for d in ordered if iou(best.box, d.box) < th.max_overlap]
        out[cls] = kept
    return out


def relative_position(a: Box, b: Box, margin: float = 0.1) -> set[str]:
    """Where box ``a`` is relative to box ``b`` (GenEval's ``relative_position``): the centre offset shrunk
    per axis by ``margin`` x (width_a + width_b) (resp. heights), zero if that crosses zero; no relation when
    both shrunk offsets are ~0; otherwise a relation holds when its shrunk component exceeds half the
    *unshrunk* offset's length (so a diagonal offset can satisfy two relations or none)."""
    ca = ((a[0] + a[2]) / 2, (a[1] + a[3]) / 2)
    cb = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
    dims = (abs(a[2] - a[0]) + abs(b[2] - b[0]), abs(a[3] - a[1]) + abs(b[3] - b[1]))
    offset = (ca[0] - cb[0], ca[1] - cb[1])
    revised = [max(abs(o) - margin * d, 0.0) * math.copysign(1.0, o) if o else 0.0 for o, d in zip(offset, dims)]
    if all(abs(r) < 1e-3 for r in revised):
        return set()
    norm = math.hypot(*offset)
    dx, dy = revised[0] / norm, revised[1] / norm
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def colour_targets(objects: Objects, metadata: Mapping) -> list[tuple[str, int]]:
    """(class, rank) of every detection whose colour the rules will read: the best ``count`` of each class an
    ``include`` gives a colour, when at least ``count`` were found (both rule sets read no other)."""
    out: list[tuple[str, int]] = []
    for req in metadata.get("include", []):
        found = objects.get(req["class"], [])
        if "color" in req and len(found) >= req["count"]:
            out += [(req["class"], i) for i in range(req["count"]) if (req["class"], i) not in out]
    return out


def _colours(found: Sequence[Detection]) -> list[str]:
    missing = [d.cls for d in found if d.color is None]
    if missing:
        raise ValueError(f"geneval: the colour of a detected {missing[0]!r} was not classified "
                         "(classify colour_targets(...) before judging)")
    return [d.color for d in found]  # type: ignore[misc]


def _position_failure(found: Sequence[Detection], group: Sequence[Detection], req: Mapping,
                      margin: float) -> str | None:
    """GenEval's position check: every one of ``found`` has the relation to every object of the target group."""
    relation = req["position"][0]
    for obj in found:
        for target in group:
            rels = relative_position(obj.box, target.box, margin)
            if relation not in rels:
                found_rels = " and ".join(sorted(rels)) or "no relation to"
                return f"expected {req['class']} {relation} target, found {found_rels} target"
    return None


def strict(objects: Objects, metadata: Mapping, th: Thresholds = Thresholds()) -> tuple[bool, list[str]]:
    """Official GenEval ``evaluate``: every ``include`` has at least ``count`` objects (its best ``count`` carry
    the colour; each of them has the relation to the best objects of the include it refers to, which must
    itself have passed), and no ``exclude`` class has ``count`` or more. Exact counts come from the exclude
    (counting prompts exclude count + 1)."""
    correct, reasons, groups = True, [], []
    for req in metadata.get("include", []):
        cls, count = req["class"], req["count"]
        found = objects.get(cls, [])[:count]
        matched = len(found) >= count
        if not matched:
            reasons.append(f"expected {cls}>={count}, found {len(found)}")
        if matched and "color" in req:
            hits = _colours(found).count(req["color"])
            if hits < count:
                matched = False
                reasons.append(f"expected {req['color']} {cls}>={count}, found {hits} {req['color']}")
        if matched and "position" in req:
            group = groups[req["position"][1]]
            why = "no target for {} to be {}".format(cls, req["position"][0]) if group is None else \
                _position_failure(found, group, req, th.position_threshold)
            if why is not None:
                matched = False
                reasons.append(why)
        correct &= matched
        groups.append(found if matched else None)
    for req in metadata.get("exclude", []):
        n = len(objects.get(req["class"], []))
        if n >= req["count"]:
            correct = False
            reasons.append(f"expected {req['class']}<{req['count']}, found {n}")
    return correct, reasons


def partial(objects: Objects, metadata: Mapping, th: Thresholds = Thresholds()) -> tuple[bool, float, list[str]]:
    """Flow-GRPO's partial credit (reward-server ``evaluate_reward``): the mean of per-requirement terms.

    Per ``include`` with n objects of its class found (all of them, up to ``max_objects``), in order:

    * count term ``1 - |count - n| / count`` (unclamped: 3 dogs for "a dog" give -1, 16 give -14);
    * n != count and the include has a colour or a position: one extra term 0;
    * n == count and a colour: ``1 - |count - k| / count`` for k of the n classified as that colour;
    * n == count, a position and the colour (if any) matched: 0 if the target include failed; else a 0 when
      the relation fails, and then always a 1 (reward-server appends the 1 after its loop whatever happened,
      so a wrong position costs 1/4 on a position prompt, not 1/3 — reproduced as is).

    ``exact`` (``strict_correct``) needs n == count for every include, colours and positions right; exclude
    clauses are not read at all (the count term penalises extra objects instead).
    """
    exact, reasons, terms, groups = True, [], [], []
    for req in metadata.get("include", []):
        cls, count = req["class"], req["count"]
        found = objects.get(cls, [])
        terms.append(1 - abs(count - len(found)) / count)
        matched = len(found) == count
        if not matched:
            reasons.append(f"score: expected {cls}=={count}, found {len(found)}")
            if "color" in req or "position" in req:
                terms.append(0.0)
        if matched and "color" in req:
            hits = _colours(found).count(req["color"])
            terms.append(1 - abs(count - hits) / count)
            if hits != count:
                matched = False
                reasons.append(f"score: expected {req['color']} {cls}=={count}, found {hits} {req['color']}")
        if matched and "position" in req:
            group = groups[req["position"][1]]
            why = None if group is None else _position_failure(found, group, req, th.position_threshold)
            if group is None:
                matched = False
                terms.append(0.0)
                reasons.append(f"score: no target for {cls} to be {req['position'][0]}")
            else:
                if why is not None:
                    matched = False
                    terms.append(0.0)
                    reasons.append("score: " + why)
                terms.append(1.0)
        exact &= matched
        groups.append(found if matched else None)
    return exact, (sum(terms) / len(terms) if terms else 0.0), reasons


def verdict(objects: Objects, metadata: Mapping, th: Thresholds = Thresholds()) -> Verdict:
    """Both rule sets on selected objects (``select``) whose ``colour_targets`` carry their colour."""
    correct, reasons = strict(objects, metadata, th)
    exact, score, more = partial(objects, metadata, th)
    return Verdict(correct=correct, score=float(score), reasons=reasons + more, exact=exact)


def judge(detections: Iterable[Detection], metadata: Mapping, th: Thresholds = Thresholds()) -> Verdict:
    """``select`` then ``verdict``: raw detections (colours set where needed) of one image -> its verdict."""
    return verdict(select(detections, metadata["tag"], th), metadata, th)


def check_metadata(metadata: Mapping, where: str = "geneval") -> None:
    """A prompt's metadata is well-formed for these rules: a known tag, includes with a known class and a
    count >= 1, colours and positions from the vocabulary, a position's index pointing at an earlier include."""
    if metadata.get("tag") not in TAGS:
        raise ValueError(f"{where}: tag must be one of {TAGS}, got {metadata.get('tag')!r}")
    include = metadata.get("include")
    if not isinstance(include, list) or not include:
        raise ValueError(f"{where}: include must be a non-empty list, got {include!r}")
    for i, req in enumerate(include):
        _check_clause(req, f"{where}: include[{i}]")
        if "color" in req and req["color"] not in COLORS:
            raise ValueError(f"{where}: include[{i}].color {req['color']!r} is not one of {COLORS}")
        if "position" in req:
            rel, ref = req["position"]
            if rel not in POSITIONS or not isinstance(ref, int) or not 0 <= ref < i:
                raise ValueError(f"{where}: include[{i}].position must be [relation in {POSITIONS}, index of an "
                                 f"earlier include], got {req['position']!r}")
    for i, req in enumerate(metadata.get("exclude", [])):
        _check_clause(req, f"{where}: exclude[{i}]")


def _check_clause(req: Any, where: str) -> None:
    if not isinstance(req, Mapping) or req.get("class") not in CLASSES:
        raise ValueError(f"{where}: needs a 'class' among GenEval's 80 COCO names, got {req!r}")
    if not isinstance(req.get("count"), int) or req["count"] < 1:
        raise ValueError(f"{where}: 'count' must be an integer >= 1, got {req.get('count')!r}")
