"""GenEval-format prompts from GenEval's own templates (``djghosh13/geneval`` ``prompts/create_prompts.py``,
read and re-implemented): six tags over the 80 COCO classes, 10 colours, 4 relations and counts 2-4.

* ``single_object`` "a photo of a/an {class}"; ``two_object`` "a photo of a {a} and a {b}" (distinct classes);
  ``counting`` "a photo of {two..four} {plural}" (include count n, exclude count n + 1); ``colors``
  "a photo of a/an {colour} {class}"; ``position`` "a photo of a {a} {relation} a {b}" (include b, then a
  relative to include 0); ``color_attr`` "a photo of a {c1} {a} and a {c2} {b}" (distinct classes and
  colours). No colour is ever given to "person". Articles by the first letter (a/an), plurals +"es" after
  an "s" else +"s" (GenEval's rules, "skises" and "sheeps" included).

Test split: by default the official GenEval suite itself, i.e. ``generate_suite`` of create_prompts.py with
seed 43 and 100 draws a tag (all 80 single objects, then two_object, counting, colors, position, color_attr),
deduplicated: 553 prompts identical, in order, to ``prompts/evaluation_metadata.jsonl``. With ``n`` given:
per-tag quotas in the official proportions (80/99/80/94/100/100 of 553), drawn the same way, deduplicated.

Train split (held-out rule): a prompt's *units* are its single class (single_object), its unordered object
pair (two_object, position, color_attr), its (class, colour) combinations (colors, color_attr) and its
(class, count) (counting). A train prompt never shares a unit of any kind with a prompt of the test split
generated with the same test settings: test object pairs, class-colour combinations and class-count pairs
never appear in train, in any tag. With the official test set all 80 single objects are in test, so train
has no single_object prompts (Flow-GRPO trains without them too). Train draws with replacement (prompts may
repeat; the counting pool has only 160 allowed prompts) in the official per-tag proportions among the tags
that have allowed prompts, shuffled.
"""

from __future__ import annotations

import json
from typing import Callable

import numpy as np

from tafs.prompts import Prompt
from tafs.rewards.geneval.rules import CLASSES, COLORS, POSITIONS, TAGS

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
OFFICIAL_SEED = 43
OFFICIAL_DRAWS = 100  # create_prompts.py --num-prompts
OFFICIAL_COUNTS = {"single_object": 80, "two_object": 99, "counting": 80, "colors": 94, "position": 100,
                   "color_attr": 100}  # prompts/evaluation_metadata.jsonl, 553 in all
TRAIN_SIZE = 5000
_PERSON = CLASSES.index("person")

Sample = dict  # create_prompts.py's dict: tag, include, [exclude], prompt


def with_article(name: str) -> str:
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def make_plural(name: str) -> str:
    return f"{name}es" if name[-1] == "s" else f"{name}s"


def _not_person(rng: np.random.Generator, size: int | None = None):
    """Class indices other than "person" (create_prompts.py's shifted draw, same random calls)."""
    idx = (rng.choice(len(CLASSES) - 1, size=size, replace=False) if size else rng.choice(len(CLASSES) - 1)) + 1
    return (idx + _PERSON) % len(CLASSES)


def single_objects(rng: np.random.Generator, size: int) -> list[Sample]:
    idxs = rng.choice(len(CLASSES), size=min(size, len(CLASSES)), replace=False)
    return [dict(tag="single_object", include=[{"class": CLASSES[i], "count": 1}],
                 prompt=f"a photo of {with_article(CLASSES[i])}") for i in idxs]


def two_object(rng: np.random.Generator) -> Sample:
    a, b = (CLASSES[i] for i in rng.choice(len(CLASSES), size=2, replace=False))
    return dict(tag="two_object", include=[{"class": a, "count": 1}, {"class": b, "count": 1}],
                prompt=f"a photo of {with_article(a)} and {with_article(b)}")


def counting(rng: np.random.Generator, max_count: int = 4) -> Sample:
    cls = CLASSES[rng.choice(len(CLASSES))]
    n = int(rng.integers(2, max_count, endpoint=True))
    return dict(tag="counting", include=[{"class": cls, "count": n}], exclude=[{"class": cls, "count": n + 1}],
                prompt=f"a photo of {NUMBERS[n]} {make_plural(cls)}")


def colors(rng: np.random.Generator) -> Sample:
    cls = CLASSES[_not_person(rng)]
    color = COLORS[rng.choice(len(COLORS))]
    return dict(tag="colors", include=[{"class": cls, "count": 1, "color": color}],
                prompt=f"a photo of {with_article(color)} {cls}")


def position(rng: np.random.Generator) -> Sample:
    a, b = (CLASSES[i] for i in rng.choice(len(CLASSES), size=2, replace=False))
    rel = POSITIONS[rng.choice(len(POSITIONS))]
    return dict(tag="position", include=[{"class": b, "count": 1}, {"class": a, "count": 1, "position": [rel, 0]}],
                prompt=f"a photo of {with_article(a)} {rel} {with_article(b)}")


def color_attr(rng: np.random.Generator) -> Sample:
    a, b = (CLASSES[i] for i in _not_person(rng, size=2))
    ca, cb = (COLORS[i] for i in rng.choice(len(COLORS), size=2, replace=False))
    include = [{"class": a, "count": 1, "color": ca}, {"class": b, "count": 1, "color": cb}]
    return dict(tag="color_attr", include=include,
                prompt=f"a photo of {with_article(ca)} {a} and {with_article(cb)} {b}")


DRAW: dict[str, Callable[[np.random.Generator], Sample]] = {
    "two_object": two_object, "counting": counting, "colors": colors, "position": position, "color_attr": color_attr,
    "single_object": lambda rng: single_objects(rng, 1)[0]}


def _key(sample: Sample) -> str:
    return json.dumps(sample, sort_keys=True)


def _dedup(samples: list[Sample]) -> list[Sample]:
    seen: set[str] = set()
    return [s for s in samples if not (_key(s) in seen or seen.add(_key(s)))]  # type: ignore[func-returns-value]


def official_suite(seed: int = OFFICIAL_SEED, draws: int = OFFICIAL_DRAWS) -> list[Sample]:
    """create_prompts.py's ``generate_suite``: every single object, ``draws`` of each other tag, deduplicated."""
    rng = np.random.default_rng(seed)
    samples = single_objects(rng, len(CLASSES))
    for tag in TAGS[1:]:
        samples += [DRAW[tag](rng) for _ in range(draws)]
    return _dedup(samples)


def quotas(n: int, weights: dict[str, float]) -> dict[str, int]:
    """``n`` split over the tags in proportion to ``weights`` (largest remainders, ties in tag order)."""
    total = sum(weights.values())
    exact = {t: n * w / total for t, w in weights.items()}
    out = {t: int(v) for t, v in exact.items()}
    for t in sorted(exact, key=lambda t: -(exact[t] - out[t]))[:n - sum(out.values())]:
        out[t] += 1
    return out


def _draw_unique(rng: np.random.Generator, tag: str, k: int) -> list[Sample]:
    if tag == "single_object":
        if k > len(CLASSES):
            raise ValueError(f"geneval prompts: {k} single_object prompts asked, only {len(CLASSES)} exist")
        return single_objects(rng, k)
    out: list[Sample] = []
    for _ in range(1000 * max(k, 1)):
        if len(out) == k:
            return out
        out = _dedup(out + [DRAW[tag](rng)])
    raise ValueError(f"geneval prompts: cannot draw {k} distinct {tag} prompts")


def test_suite(n: int | None = None, seed: int = OFFICIAL_SEED) -> list[Sample]:
    """The official suite (``n`` None), or ``n`` distinct prompts in the official per-tag proportions."""
    if n is None:
        return official_suite(seed)
    rng = np.random.default_rng(seed)
    return [s for tag, k in quotas(n, OFFICIAL_COUNTS).items() for s in _draw_unique(rng, tag, k)]


def units(sample: Sample) -> set[tuple]:
    """The compositional units of a prompt the held-out rule compares (module docstring)."""
    inc = sample["include"]
    if sample["tag"] == "single_object":
        return {("class", inc[0]["class"])}
    if sample["tag"] == "counting":
        return {("count", inc[0]["class"], inc[0]["count"])}
    out = {("colour", r["class"], r["color"]) for r in inc if "color" in r}
    if len(inc) == 2:
        out.add(("pair",) + tuple(sorted(r["class"] for r in inc)))
    return out


def train_set(n: int = TRAIN_SIZE, seed: int = 0, held_out: set[tuple] = frozenset()) -> list[Sample]:
    """``n`` prompts (with repeats) none of which has a unit in ``held_out``, shuffled."""
    rng = np.random.default_rng(seed)
    allowed_single = [c for c in CLASSES if ("class", c) not in held_out]
    weights = {t: w for t, w in OFFICIAL_COUNTS.items() if t != "single_object" or allowed_single}
    out: list[Sample] = []
    for tag, k in quotas(n, weights).items():
        got = 0
        for _ in range(1000 * max(k, 1)):
            if got == k:
                break
            sample = DRAW[tag](rng)
            if not units(sample) & held_out:
                out.append(sample)
                got += 1
        else:
            raise ValueError(f"geneval prompts: cannot draw {k} train {tag} prompts outside the held-out units")
    return [out[i] for i in rng.permutation(len(out))]


def to_prompt(sample: Sample) -> Prompt:
    meta = {"tag": sample["tag"], "include": [dict(r) for r in sample["include"]],
            "exclude": [dict(r) for r in sample.get("exclude", [])]}
    return Prompt(sample["prompt"], meta, sample["tag"])


def generate(split: str, n: int | None = None, seed: int | None = None, test_n: int | None = None,
             test_seed: int = OFFICIAL_SEED) -> list[Prompt]:
    """GenEval-format prompts of ``split``: ``test`` (``n`` None: the official 553; ``seed`` default 43) or
    ``train`` (``n`` default 5000, ``seed`` default 0, held out against the test split of ``test_n`` and
    ``test_seed``). Deterministic in its arguments. Category = tag; metadata = {tag, include, exclude}."""
    if split == "test":
        samples = test_suite(n, OFFICIAL_SEED if seed is None else seed)
    elif split == "train":
        held = set().union(*(units(s) for s in test_suite(test_n, test_seed)))
        samples = train_set(TRAIN_SIZE if n is None else n, 0 if seed is None else seed, held)
    else:
        raise ValueError(f"geneval prompts: split must be 'train' or 'test', got {split!r}")
    return [to_prompt(s) for s in samples]
