"""Evaluation in prompt shards that survive a kill: each shard's per-image scores (and its grid images) are written
to ``<eval dir>/shards/shard{i}.json`` (+ ``.pt``) atomically as it finishes; a re-run skips the shards on disk whose
key matches and gathers every shard into the same metrics.json a one-shot run writes.

With ``eval.shard_jobs`` K > 1 the shards of one model's evaluation are spread over K Snakemake jobs
(``ShardJob``: the scatter jobs), and a gather job (``tafs.eval_jobs``) reads them back into metrics.json.

A shard's key hashes everything that defines its numbers (model, its info, the eval config but the memory/shard
options, the shard's position and prompts), so a shard written under another config is never reused.
Image ``i`` keeps its global index (its noise / seed), so shards reproduce the unsharded images exactly when
``shard_size`` is a multiple of ``batch_size`` (the batches are then the same).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import torch

from tafs.config import ConfigError
from tafs.io import atomic_path, read_json, write_json
from tafs.paths import eval_shard_file
from tafs.prompts import Prompt
from tafs.rewards.base import Reward

log = logging.getLogger(__name__)

# Options that change how (not what) is computed: outside the shard key.
RUNTIME_KEYS = ("shard_size", "rewards_after_generation")

Scores = dict[str, list[float]]  # metric key -> one score per image of the shard
ShardImagesFn = Callable[[range], torch.Tensor]  # a span of the evaluation list -> its images in [0, 1]


def spans(n: int, size: int) -> list[range]:
    """The evaluation list's shards: consecutive spans of ``size`` images (the last one shorter)."""
    size = max(1, size)
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


def shard_key(identity: Mapping, span: range, prompts: Sequence[Prompt]) -> str:
    """A hash of what defines the shard's numbers (``identity``: model, info, eval config but RUNTIME_KEYS)."""
    body = {"identity": dict(identity),
            "span": [span.start, span.stop],
            "prompts": [[p.text, p.category, p.metadata] for p in prompts]}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:20]


def score(texts: Sequence[str], meta: Sequence, images: torch.Tensor, rewards: Mapping[str, Reward]) -> Scores:
    return {key: [float(v) for v in fn(texts, meta, images)] for key, fn in rewards.items()}


def score_one_at_a_time(texts: Sequence[str], meta: Sequence, images: torch.Tensor, metrics: Mapping[str, str],
                        build: Callable[[str], Reward]) -> Scores:
    """Each reward model built, used for every metric that names it, then freed before the next one is built:
    the peak memory is the generator plus one reward, not every reward at once."""
    out: Scores = {}
    for name in dict.fromkeys(metrics.values()):
        reward = build(name)
        for key in (k for k, n in metrics.items() if n == name):
            out[key] = [float(v) for v in reward(texts, meta, images)]
        del reward
        free_memory()
    return {key: out[key] for key in metrics}


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class ShardStore:
    """The shard files of one evaluation point (one model, sampler and NFE)."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = Path(out_dir)

    def json(self, i: int) -> Path:
        return eval_shard_file(self.dir, i, ".json")

    def images(self, i: int) -> Path:
        return eval_shard_file(self.dir, i, ".pt")

    def load(self, i: int, key: str) -> dict | None:
        """The finished shard ``i`` when it was written under ``key`` (else None: it is (re)computed)."""
        path = self.json(i)
        if not path.exists():
            return None
        try:
            done = read_json(path)
        except ConfigError:  # a garbled file is recomputed, never trusted
            return None
        if done.get("key") != key or not self.images(i).exists():
            return None
        return done

    def save(self, i: int, key: str, scores: Scores, grid: dict[int, torch.Tensor], wall: float) -> None:
        """The grid images first, then the json that marks the shard done (both atomic)."""
        with atomic_path(self.images(i)) as tmp:
            torch.save({"key": key, "grid": grid}, tmp)
        write_json(self.json(i), {"key": key, "scores": scores, "wall_s": wall})

    def grid(self, i: int) -> dict[int, torch.Tensor]:
        return torch.load(self.images(i), map_location="cpu")["grid"]


def make_shards(images_fn: ShardImagesFn, chosen: Sequence[Prompt], identity: Mapping, shard_size: int,
                store: ShardStore, scorer: Callable[[Sequence[str], Sequence, torch.Tensor], Scores],
                grid_idx: Sequence[int], which: Iterable[int] | None = None) -> int:
    """Sample and score the shards ``which`` (None: every shard) that are not on disk under their key; the number
    generated in this call."""
    parts = spans(len(chosen), shard_size)
    want, made = set(grid_idx), 0
    for i in range(len(parts)) if which is None else which:
        span = parts[i]
        part = [chosen[j] for j in span]
        key = shard_key(identity, span, part)
        if store.load(i, key) is not None:
            continue
        t0 = time.time()
        images = images_fn(span)
        gen_s = time.time() - t0  # sampling time only, as metrics.json's wall_s always was
        got = scorer([p.text for p in part], [p.metadata for p in part], images)
        store.save(i, key, got, {j: images[j - span.start].clone() for j in span if j in want}, gen_s)
        del images
        made += 1
        log.info("shard %d (%d-%d) done", i, span.start, span.stop)
    return made


def gather_shards(chosen: Sequence[Prompt], identity: Mapping, shard_size: int,
                  store: ShardStore) -> tuple[Scores, dict[int, torch.Tensor], float]:
    """Every shard read back from disk: (scores over the whole list, grid images by global index, summed sampling
    time). A shard missing, or written under another key, is an error naming its file."""
    scores: Scores = {}
    grid: dict[int, torch.Tensor] = {}
    wall = 0.0
    for i, span in enumerate(spans(len(chosen), shard_size)):
        done = store.load(i, shard_key(identity, span, [chosen[j] for j in span]))
        if done is None:
            raise ConfigError(f"{store.json(i)}: shard {i} (images {span.start}-{span.stop - 1}) is missing or was "
                              "written under another config; re-run the evaluation job that samples it")
        for k, v in done["scores"].items():
            scores.setdefault(k, []).extend(float(x) for x in v)
        grid.update(store.grid(i))
        wall += float(done["wall_s"])
    return scores, grid, wall


@dataclass(frozen=True)
class ShardJob:
    """Scatter job ``index`` of ``count`` of one model's evaluation (config ``eval.shard_jobs``). The job's
    evaluation points (sampler, NFE), in its order, each have ``n`` shards; unit ``u = point * n + shard`` goes to
    job ``u mod count``: round robin, so the jobs differ by at most one shard and every point is spread over them."""

    index: int
    count: int
    points: tuple[tuple[str, int], ...]

    @classmethod
    def parse(cls, text: str, samplers: Sequence[str], nfes: Sequence[int]) -> "ShardJob":
        """``"J/K"`` (``--shard-job``) over the points ``samplers`` x ``nfes``."""
        j, _, k = text.partition("/")
        if not (j.isdigit() and k.isdigit() and int(j) < int(k)):
            raise ConfigError(f"--shard-job: expected J/K with 0 <= J < K, got {text!r}")
        return cls(int(j), int(k), tuple((s, int(n)) for s in samplers for n in nfes))

    def shards(self, sampler: str, nfe: int, n: int) -> list[int]:
        """The shards of point (sampler, NFE), of its ``n``, that this job samples."""
        p = self.points.index((sampler, nfe))
        return [i for i in range(n) if (p * n + i) % self.count == self.index]


def identity_of(model_name: str, info: Mapping[str, str] | None, cfg: object) -> dict:
    """What a shard's key hashes besides its prompts: the model, its info and the eval config but RUNTIME_KEYS."""
    fields = {k: v for k, v in asdict(cfg).items() if k not in RUNTIME_KEYS}  # type: ignore[call-overload]
    return {"model": model_name, "info": dict(info or {}), "cfg": fields}
