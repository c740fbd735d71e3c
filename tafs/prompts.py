"""Prompt files: the one format training and evaluation read (DESIGN §11).

A prompt file is JSONL, one object a line: ``prompt`` (the text), optional ``metadata`` (a mapping a reward
may need, e.g. GenEval's ``tag`` / ``include``) and optional ``category`` (what the tables break results down
by). Other top-level keys are folded into ``metadata``, so GenEval's own metadata files read as they are.
A ``.txt`` file holds one prompt a line (blank lines are skipped). Every error names the file and the line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from tafs.config import ConfigError
from tafs.io import atomic_path

RESERVED = ("prompt", "metadata", "category")


class PromptFileError(ConfigError):
    """A prompt file that cannot be used; the message names the file (and the line)."""


@dataclass(frozen=True)
class Prompt:
    text: str
    metadata: Mapping = field(default_factory=dict)
    category: str | None = None
    line: int | None = field(default=None, compare=False)  # where it was read from (for error messages)

    def to_json(self) -> dict:
        out: dict = {"prompt": self.text}
        if self.category is not None:
            out["category"] = self.category
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out


def parse_record(obj: object, where: str, line: int | None = None) -> Prompt:
    """One JSONL object -> a Prompt; ``where`` ("file:line") prefixes every error."""
    if not isinstance(obj, dict):
        raise PromptFileError(f"{where}: expected a JSON object with a 'prompt' key, got {type(obj).__name__}")
    text = obj.get("prompt")
    if not isinstance(text, str) or not text.strip():
        raise PromptFileError(f"{where}: 'prompt' must be a non-empty string, got {text!r}")
    meta = obj.get("metadata", {})
    if not isinstance(meta, dict):
        raise PromptFileError(f"{where}: 'metadata' must be a JSON object, got {type(meta).__name__}")
    meta = {**{k: v for k, v in obj.items() if k not in RESERVED}, **meta}
    cat = obj.get("category")
    if cat is not None and not isinstance(cat, str):
        raise PromptFileError(f"{where}: 'category' must be a string, got {cat!r}")
    return Prompt(text, meta, cat, line)


def read_prompt_file(path: str | Path) -> list[Prompt]:
    """All prompts of a JSONL or ``.txt`` file; an unreadable, empty or malformed file raises PromptFileError."""
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"{path}: prompt file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise PromptFileError(f"{path}: not UTF-8 text ({e})") from e
    prompts = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{no}"
        if path.suffix == ".txt":
            prompts.append(Prompt(line.strip(), line=no))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise PromptFileError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); "
                                  "each line must be one JSON object, e.g. {\"prompt\": \"a red ring\"}") from e
        prompts.append(parse_record(obj, where, no))
    if not prompts:
        raise PromptFileError(f"{path}: no prompts (the file is empty); write one prompt a line")
    return prompts


def write_prompt_file(path: str | Path, prompts: Iterable[Prompt]) -> int:
    """Write JSONL atomically; returns the number of prompts."""
    rows = [json.dumps(p.to_json(), sort_keys=False) + "\n" for p in prompts]
    if not rows:
        raise PromptFileError(f"{path}: refusing to write an empty prompt file")
    with atomic_path(path) as tmp:
        tmp.write_text("".join(rows), encoding="utf-8")
    return len(rows)


def check_metadata(prompts: Sequence[Prompt], needs: Mapping[str, Sequence[str]], source: str) -> None:
    """Every prompt carries the metadata keys each reward needs (``needs``: reward -> keys).

    The message names ``source:line`` (the line a prompt was read from, else its position).
    """
    for reward, keys in needs.items():
        for i, p in enumerate(prompts, 1):
            missing = [k for k in keys if k not in p.metadata]
            if missing:
                raise PromptFileError(
                    f"{source}:{p.line or i}: prompt {p.text!r} lacks metadata {missing} that the reward "
                    f"{reward!r} needs; "
                    f"add them under \"metadata\" in that line, or train/evaluate this task without {reward!r}")


def categories_of(prompts: Sequence[Prompt]) -> list[str]:
    """The categories in order of first appearance (empty when no prompt has one)."""
    return list(dict.fromkeys(p.category for p in prompts if p.category is not None))


def by_category(prompts: Sequence[Prompt]) -> dict[str | None, list[Prompt]]:
    """Prompts grouped by category in order of first appearance (one group ``None`` without categories)."""
    out: dict[str | None, list[Prompt]] = {}
    for p in prompts:
        out.setdefault(p.category, []).append(p)
    return out


def draw_prompts(prompts: Sequence[Prompt], n: int, rng: np.random.Generator, mode: str = "balanced") -> list[Prompt]:
    """``n`` prompts with replacement. ``balanced``: a category uniformly, then a prompt of it uniformly
    (prompts without categories: one pool); ``uniform``: a prompt of the file uniformly."""
    if mode == "uniform":
        return [prompts[rng.integers(len(prompts))] for _ in range(n)]
    pool = by_category(prompts)
    cats = list(pool)
    return [pool[c][rng.integers(len(pool[c]))] for c in (cats[rng.integers(len(cats))] for _ in range(n))]
