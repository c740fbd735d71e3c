"""GenEval as two rewards sharing one detector and one CLIP: ``geneval`` (official correctness, 1/0 an image)
and ``geneval_score`` (Flow-GRPO's partial credit, its training reward). Rules: ``tafs.rewards.geneval.rules``.

In process (default): a transformers Mask2Former (``detector``) and CLIP (``clip``), each loaded once per
process (``runtime.resident``); both rewards built with the same kwargs share one scorer, and an image batch
scored by one is not scored again by the other (a one-entry memo on the batch tensor, its in-place version
counter or, for inference-mode tensors, a fingerprint of its values, the prompts and the metadata).

Or an external GenEval-compatible scorer (``url``; e.g. the official mmdet stack wrapped in a small server):
``POST url`` with ``Content-Type: application/json`` and the body ``{"images": [base64 PNG, ...],
"metadata": [{"tag", "include", "exclude"?, "prompt", ...}, ...], "prompts": [str, ...]}`` (8-bit RGB PNGs at
the generated size, ``batch_size`` images a request); the answer is ``{"scores": [float, ...],
"strict": [0/1 or bool, ...]}``, one entry per image in order: ``strict`` official GenEval correctness,
``scores`` the partial credit; ``null`` marks an image the server could not score (NaN here).

Images (N, 3, H, W) in [0, 1] are first quantised to 8 bits, as GenEval reads PNG files (Flow-GRPO's training
reward sends JPEGs, quality 75, to its server: its training scores saw compression artefacts; ours do not);
the paper evaluates at 1024 px. Other differences from official GenEval: the detector and colour modules.
"""

from __future__ import annotations

import base64
import inspect
import io
import json
import math
import urllib.error
import urllib.request
import weakref
from dataclasses import replace
from typing import Mapping, Sequence

import torch

from tafs.rewards import runtime
from tafs.rewards.base import RewardSpec, check_batch
from tafs.rewards.geneval import rules
from tafs.rewards.geneval.colour import ColourClassifier, crop_on_grey
from tafs.rewards.geneval.detector import MMDET_SCALE, load_detector

DEFAULT_DETECTOR = "facebook/mask2former-swin-small-coco-instance"
DEFAULT_CLIP = "openai/clip-vit-large-patch14"
NEEDS = ("tag", "include")
Scores = tuple[torch.Tensor, torch.Tensor]  # (strict 1/0, partial score), float32 on the CPU, NaN = unscored


def quantise(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] at 8-bit levels (what GenEval's PNG files hold)."""
    return (images.float().clamp(0, 1) * 255).round() / 255


class LocalScorer:
    """Detector + colour classifier + rules, in this process."""

    def __init__(self, detector, colours: ColourClassifier, thresholds: rules.Thresholds):
        self.detector = detector
        self.colours = colours
        self.thresholds = thresholds
        self.last_verdicts: list[rules.Verdict] = []  # of the last batch, for inspection (reasons)

    def verdicts(self, metadata: Sequence[Mapping], images: torch.Tensor) -> list[rules.Verdict]:
        th = self.thresholds
        x = quantise(images.to(self.detector.device))
        found = [rules.select(d, m["tag"], th) for d, m in
                 zip(self.detector.detect(x, th.lowest), metadata)]
        targets = [(i, cls, r) for i, (objs, m) in enumerate(zip(found, metadata))
                   for cls, r in rules.colour_targets(objs, m)]
        crops = [crop_on_grey(x[i], found[i][cls][r].mask, found[i][cls][r].box) for i, cls, r in targets]
        for (i, cls, r), colour in zip(targets, self.colours.classify(crops, [t[1] for t in targets])):
            found[i][cls][r] = replace(found[i][cls][r], color=colour)
        return [rules.verdict(objs, m, th) for objs, m in zip(found, metadata)]

    def scores(self, prompts: Sequence[str], metadata: Sequence[Mapping], images: torch.Tensor) -> Scores:
        self.last_verdicts = self.verdicts(metadata, images)
        strict = torch.tensor([float(v.correct) for v in self.last_verdicts], dtype=torch.float32)
        return strict, torch.tensor([v.score for v in self.last_verdicts], dtype=torch.float32)


def png_base64(image: torch.Tensor) -> str:
    """(3, H, W) in [0, 1] -> base64 of an 8-bit RGB PNG."""
    from PIL import Image

    array = (quantise(image.detach().cpu()) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(array, "RGB").save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


class HttpScorer:
    """A GenEval-compatible server (protocol in the module docstring)."""

    def __init__(self, url: str, batch_size: int = 16, timeout: float = 600.0, retries: int = 3):
        self.url, self.batch_size, self.timeout, self.retries = url, batch_size, timeout, retries

    def post(self, body: dict) -> dict:
        data = json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.url, data=data, headers={"Content-Type": "application/json"})
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                detail = e.read()[:500].decode("utf-8", "replace")
                raise RuntimeError(f"geneval reward: the scorer at {self.url} answered HTTP {e.code}: {detail}") from e
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                if attempt == self.retries:
                    raise RuntimeError(f"geneval reward: no answer from the scorer at {self.url} after "
                                       f"{self.retries + 1} tries ({e}); is it running? (reward_models.*.url)") from e
        raise AssertionError("unreachable")

    def scores(self, prompts: Sequence[str], metadata: Sequence[Mapping], images: torch.Tensor) -> Scores:
        strict, score = [], []
        for part in runtime.batches(len(images), self.batch_size):
            meta = [{**m, "prompt": m.get("prompt", p)} for p, m in zip(prompts[part], metadata[part])]
            answer = self.post({"images": [png_base64(im) for im in images[part]], "metadata": meta,
                                "prompts": list(prompts[part])})
            for key, out in (("strict", strict), ("scores", score)):
                values = answer.get(key) if isinstance(answer, dict) else None
                if not isinstance(values, list) or len(values) != len(meta):
                    raise RuntimeError(f"geneval reward: the scorer at {self.url} must answer {{'scores': [...], "
                                       f"'strict': [...]}} with {len(meta)} entries each; got {str(answer)[:300]}")
                out += [math.nan if v is None else float(v) for v in values]
        return torch.tensor(strict, dtype=torch.float32), torch.tensor(score, dtype=torch.float32)


def _version(images: torch.Tensor) -> tuple:
    """What changes when a tensor is modified in place: its version counter, or for inference-mode tensors
    (which have none) a fingerprint of the values."""
    try:
        return ("version", images._version)
    except RuntimeError:
        x = images.detach().double()
        return ("values", float(x.sum()), float((x * x).sum()))


class SharedScorer:
    """One scorer behind both rewards, remembering the last batch so the other reward does not redo it."""

    def __init__(self, backend):
        self.backend = backend
        self._last: tuple | None = None
        self.calls = 0  # batches actually scored (not served from the memo)

    def scores(self, prompts: Sequence[str], metadata: Sequence[Mapping], images: torch.Tensor) -> Scores:
        key = (_version(images), tuple(images.shape), tuple(prompts), json.dumps(list(metadata), sort_keys=True,
                                                                                 default=str))
        if self._last is not None and self._last[0]() is images and self._last[1] == key:
            return self._last[2]
        result = self.backend.scores(prompts, metadata, images)
        self.calls += 1
        self._last = (weakref.ref(images), key, result)
        return result


class GenEvalReward:
    """A reward reading one of the shared scorer's two scores (``strict`` or ``score``)."""

    def __init__(self, shared: SharedScorer, which: str):
        self.shared, self.which = shared, which

    def __call__(self, prompts: Sequence[str], metadata: Sequence[Mapping], images: torch.Tensor) -> torch.Tensor:
        check_batch(prompts, metadata, images)
        for i, m in enumerate(metadata):
            rules.check_metadata(m, f"geneval: prompt {i} ({prompts[i]!r})")
        strict, score = self.shared.scores(list(prompts), list(metadata), images)
        return strict if self.which == "strict" else score


def _shared(detector: str, clip: str, url: str | None, device: str, dtype: str, batch_size: int,
            th: rules.Thresholds, detector_size: Sequence[int] | None, timeout: float) -> SharedScorer:
    if url is not None:
        key = ("geneval-http", url, batch_size, timeout)
        return runtime.resident(key, lambda: SharedScorer(HttpScorer(url, batch_size, timeout)))
    from tafs.rewards.clip_score import resident_scorer

    scale = None if detector_size is None else tuple(int(s) for s in detector_size)
    dev = str(runtime.resolve_device(device))
    key = ("geneval-scorer", str(detector), str(clip), dev, str(dtype), batch_size, th, scale)

    def build() -> SharedScorer:
        det = load_detector(detector, device=dev, dtype=dtype, scale=scale, batch_size=batch_size)
        clip_scorer = resident_scorer(runtime.check_source(clip, "geneval"), "geneval", device=dev, dtype=dtype,
                                      batch_size=batch_size)
        return SharedScorer(LocalScorer(det, ColourClassifier(clip_scorer, batch_size), th))

    return runtime.resident(key, build)


def _build(which: str, detector: str = DEFAULT_DETECTOR, clip: str = DEFAULT_CLIP, url: str | None = None,
           device: str = "auto", dtype: str = "fp32", batch_size: int = 16, threshold: float = 0.3,
           counting_threshold: float = 0.9, max_objects: int = 16, max_overlap: float = 1.0,
           position_threshold: float = 0.1, detector_size: Sequence[int] | None = MMDET_SCALE,
           timeout: float = 600.0) -> GenEvalReward:
    th = rules.Thresholds(threshold, counting_threshold, int(max_objects), max_overlap, position_threshold)
    shared = _shared(detector, clip, url, device, dtype, int(batch_size), th, detector_size, timeout)
    return GenEvalReward(shared, which)


def geneval(**kwargs) -> GenEvalReward:
    """Official GenEval correctness per image (1/0). Kwargs: ``detector`` (Mask2Former COCO instance folder or
    hub id), ``clip`` (CLIPModel folder or hub id), ``url`` (an external scorer instead of both), ``device``,
    ``dtype``, ``batch_size``, GenEval's ``threshold`` 0.3, ``counting_threshold`` 0.9, ``max_objects`` 16,
    ``max_overlap`` 1.0, ``position_threshold`` 0.1, ``detector_size`` [short, long] (mmdet's [800, 1333];
    null: the image processor's size), ``timeout`` (s per request to ``url``)."""
    return _build("strict", **kwargs)


def geneval_score(**kwargs) -> GenEvalReward:
    """Flow-GRPO's partial-credit GenEval score per image (``rules.partial``); same kwargs as ``geneval``."""
    return _build("score", **kwargs)


_SOURCE = f"{DEFAULT_DETECTOR} + {DEFAULT_CLIP} (transformers), or a GenEval server (url)"
# Both factories take `_build`'s options: say so to inspect.signature (the DAG checks config keys against it).
for _factory in (geneval, geneval_score):
    _factory.__signature__ = inspect.signature(_build).replace(
        parameters=[p for n, p in inspect.signature(_build).parameters.items() if n != "which"])

REWARDS = {
    "geneval": RewardSpec(
        "geneval", geneval, "GenEval",
        "official GenEval correctness (1/0 an image): Mask2Former COCO instances + CLIP colour classification, "
        "GenEval's rules; tables: % correct per tag and overall (reward_models.geneval.detector / .clip / .url)",
        needs=NEEDS, percent=True, scale="1/0 an image; % correct, SD3.5-M ~63, Flow-GRPO ~95",
        source=_SOURCE),
    "geneval_score": RewardSpec(
        "geneval_score", geneval_score, "GenEval score",
        "Flow-GRPO's partial-credit GenEval score (its training reward): mean of per-requirement terms "
        "(count 1-|c-n|/c, colour, position), same models as geneval",
        needs=NEEDS, percent=True, scale="mean of partial terms, <= 1 (negative with many extra objects)",
        source=_SOURCE),
}
