"""GenEval-like prompt specs over a small vocabulary, with deterministic held-out splits.

A spec is a list of required objects (shape, optional colour) plus an optional spatial relation
between the first two. Every image lives on a coarse slot grid (see ``render``), so a spec is
checkable exactly by ``evaluator``.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Iterable

SHAPES: tuple[str, ...] = ("square", "ring", "cross", "triangle")
PLURALS: dict[str, str] = {"square": "squares", "ring": "rings", "cross": "crosses", "triangle": "triangles"}
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow")
NUMBERS: dict[int, str] = {2: "two", 3: "three"}
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
CATEGORIES: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


@dataclass(frozen=True)
class ObjectSpec:
    shape: str
    color: str | None = None


@dataclass(frozen=True)
class PromptSpec:
    category: str
    objects: tuple[ObjectSpec, ...]
    relation: str | None = None  # relation of objects[0] to objects[1]

    @property
    def text(self) -> str:
        return spec_text(self)


def _noun(o: ObjectSpec) -> str:
    return f"a {o.color} {o.shape}" if o.color else f"a {o.shape}"


def spec_text(spec: PromptSpec) -> str:
    o = spec.objects
    if spec.category == "counting":
        return f"{NUMBERS[len(o)]} {PLURALS[o[0].shape]}"
    if spec.relation:
        return f"{_noun(o[0])} {spec.relation} {_noun(o[1])}"
    return " and ".join(_noun(x) for x in o)


def vocabulary() -> list[str]:
    words = {"a", "and", "of"} | set(SHAPES) | set(PLURALS.values()) | set(COLORS) | set(NUMBERS.values())
    for r in RELATIONS:
        words |= set(r.split())
    return sorted(words)


def all_specs(category: str) -> list[PromptSpec]:
    """Every prompt of a category, in a fixed order."""
    S, C = SHAPES, COLORS
    pairs = [(a, b) for a, b in itertools.permutations(S, 2)]
    if category == "single_object":
        return [PromptSpec(category, (ObjectSpec(s),)) for s in S]
    if category == "two_object":
        return [PromptSpec(category, (ObjectSpec(a), ObjectSpec(b))) for a, b in itertools.combinations(S, 2)]
    if category == "counting":
        return [PromptSpec(category, tuple(ObjectSpec(s) for _ in range(n))) for n in NUMBERS for s in S]
    if category == "colors":
        return [PromptSpec(category, (ObjectSpec(s, c),)) for s in S for c in C]
    if category == "position":
        return [PromptSpec(category, (ObjectSpec(a), ObjectSpec(b)), r) for a, b in pairs for r in RELATIONS]
    if category == "color_attr":
        return [
            PromptSpec(category, (ObjectSpec(a, ca), ObjectSpec(b, cb)))
            for a, b in itertools.combinations(S, 2)
            for ca, cb in itertools.permutations(C, 2)
        ]
    raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")


def _hash01(text: str, salt: str) -> float:
    h = hashlib.sha256(f"{salt}:{text}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def split_specs(category: str, split: str, test_fraction: float = 0.25, min_holdout: int = 16,
                salt: str = "tafs") -> list[PromptSpec]:
    """Deterministic split by a salted hash of the prompt text.

    Categories with at least ``min_holdout`` prompts hold out ``test_fraction`` of their combinations
    (never seen in pretraining or RL); smaller categories share all prompts between splits, as GenEval
    itself repeats its single-object prompts.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be train, test or all, got {split!r}")
    specs = all_specs(category)
    if split == "all" or len(specs) < min_holdout:
        return specs
    ranked = sorted(specs, key=lambda s: _hash01(s.text, salt))
    n_test = max(1, round(test_fraction * len(specs)))
    test = set(ranked[:n_test])
    return [s for s in specs if (s in test) == (split == "test")]


def prompt_set(split: str, categories: Iterable[str] = CATEGORIES, **kw) -> list[PromptSpec]:
    return [s for c in categories for s in split_specs(c, split, **kw)]


def spec_to_dict(spec: PromptSpec) -> dict:
    return {
        "category": spec.category,
        "text": spec.text,
        "objects": [{"shape": o.shape, "color": o.color} for o in spec.objects],
        "relation": spec.relation,
    }


def spec_from_dict(d: dict) -> PromptSpec:
    objs = tuple(ObjectSpec(o["shape"], o.get("color")) for o in d["objects"])
    return PromptSpec(d["category"], objs, d.get("relation"))
