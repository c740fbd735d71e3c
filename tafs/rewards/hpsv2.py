"""HPSv2.1 (Wu et al. 2023): an open_clip ViT-H-14 fine-tuned on human preference pairs (HPD v2).

Score = cosine(image features, text features) of the normalised embeddings (~0.28-0.36), exactly what
``hpsv2.score`` returns (``image_features @ text_features.T`` of ``output_dict`` features; no logit scale).

Loading: the open_clip architecture ``arch`` (``ViT-H-14``) built without pretrained weights, then the state
dict of ``HPS_v2.1_compressed.pt`` (``{"state_dict": ...}`` or a bare dict, ``module.`` prefixes stripped)
loaded strictly. ``path`` is a folder holding that file, or a hub id (``xswu/HPSv2``) from which only that
file is downloaded. A folder that also holds ``open_clip_config.json`` (the hub's open_clip layout,
``{"model_cfg": ..., "preprocess_cfg": ...}``) describes its own architecture and tokenizer: open_clip's
``local-dir:`` schema builds both from it.

Preprocessing is HPSv2's ``ResizeMaxSize`` done in torch on the batch: the longest side to the model's
image size (bicubic, antialiased), zero-padded to a square (the left/top pad is the smaller half), then the
model's mean/std (CLIP's).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from tafs.rewards import runtime
from tafs.rewards.base import RewardSpec
from tafs.rewards.clip_score import CosineScorer, normalize, resize

DEFAULT_REPO = "xswu/HPSv2"
CHECKPOINT = "HPS_v2.1_compressed.pt"
ARCH = "ViT-H-14"
OPEN_CLIP_CONFIG = "open_clip_config.json"


def preprocess(images: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1] -> HPSv2's pixel values: longest side to ``size`` keeping the aspect
    ratio, zero-padded to ``size`` x ``size`` (pad left/top = half rounded down, as open_clip's
    ``CenterCropOrPad`` and HPSv2's ``ResizeMaxSize``), normalised with ``mean``/``std``."""
    x = images.float()
    h, w = x.shape[-2:]
    scale = size / max(h, w)
    target = (min(size, round(h * scale)), min(size, round(w * scale)))
    x = resize(x, target, "bicubic")
    pad_h, pad_w = size - target[0], size - target[1]
    x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)
    return normalize(x, mean, std)


def checkpoint_file(path: str, checkpoint: str = CHECKPOINT) -> Path:
    """The checkpoint: ``path`` itself (a file), ``path/checkpoint`` (a folder), or downloaded from a hub id."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        if not (p / checkpoint).is_file():
            raise FileNotFoundError(f"hpsv2 reward: no {checkpoint} in {str(path)!r}; set reward_models.hpsv2.path "
                                    f"to a folder holding it (or a hub id such as {DEFAULT_REPO})")
        return p / checkpoint
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(path, checkpoint))
    except Exception as e:  # offline and not cached, no such repo or file, gated: say which file of what
        raise OSError(f"hpsv2 reward: cannot get {checkpoint} from the hub repo {path!r}: {e}") from e


def state_dict(file: Path, weights_only: bool = True) -> dict[str, torch.Tensor]:
    """The model weights of an HPS checkpoint: ``{"state_dict": ...}`` (training format) or the bare dict,
    with any DistributedDataParallel ``module.`` prefix removed. ``weights_only=False`` unpickles arbitrary
    objects: only for a checkpoint from a trusted source that holds more than tensors and plain values."""
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=weights_only)
    except Exception as e:  # a truncated download or a non-checkpoint file: name the file
        hint = " (if it is trusted and holds pickled objects, set weights_only: false)" if weights_only else ""
        raise OSError(f"hpsv2 reward: cannot read the checkpoint {str(file)!r}{hint}: {e}") from e
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise OSError(f"hpsv2 reward: {str(file)!r} holds no state dict")
    return {k.removeprefix("module."): v for k, v in sd.items()}


class _NoRandomInitWarning(logging.Filter):
    """open_clip warns (on the root logger) that a model built without weights is "initialized randomly";
    the HPS weights are loaded right after, so that line would only mislead a training log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not ("open_clip" in record.pathname and record.levelno == logging.WARNING
                    and "weights" in record.getMessage())


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    root, f = logging.getLogger(), _NoRandomInitWarning()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


def build_model(path: str, arch: str = ARCH) -> tuple:
    """(open_clip model with random weights, its tokenizer): from ``open_clip_config.json`` when ``path`` is a
    folder holding one, else the named architecture."""
    open_clip = runtime.require("open_clip", "open_clip_torch", "hpsv2")
    p = Path(path)
    name = f"local-dir:{p}" if p.is_dir() and (p / OPEN_CLIP_CONFIG).is_file() else arch
    with _quiet_open_clip():
        if name == arch:
            model = open_clip.create_model(arch, pretrained=None)
        else:
            model = open_clip.create_model(name, load_weights=False)
    return model, open_clip.get_tokenizer(name)


def load_hps(path: str, checkpoint: str, arch: str, device: torch.device, dtype: torch.dtype,
             weights_only: bool = True) -> tuple:
    """(model on ``device`` in ``dtype``, eval, no grads; tokenizer) with the HPS weights loaded strictly."""
    file = checkpoint_file(path, checkpoint)  # first: a missing file fails before ViT-H is built
    weights = state_dict(file, weights_only)
    model, tokenizer = build_model(path, arch)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise OSError(f"hpsv2 reward: {str(file)!r} does not fit open_clip {arch!r} "
                      f"(or the folder's {OPEN_CLIP_CONFIG}): {e}") from e
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False), tokenizer


class HpsScorer(CosineScorer):
    """A reward: HPSv2 cosine of an open_clip model; text features cached per prompt."""

    def __init__(self, model, tokenizer, device: torch.device, batch_size: int = 64):
        from open_clip import get_model_preprocess_cfg

        self.model, self.tokenizer, self.device, self.batch_size = model, tokenizer, device, batch_size
        cfg = get_model_preprocess_cfg(model)
        size = cfg.get("size", 224)
        self.size = int(size if isinstance(size, int) else max(size))
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])
        self._text_cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        missing = sorted({t for t in texts if t not in self._text_cache})
        for sl in runtime.batches(len(missing), self.batch_size):
            emb = self.model.encode_text(self.tokenizer(missing[sl]).to(self.device), normalize=True)
            self._text_cache.update(zip(missing[sl], emb.float()))
        return torch.stack([self._text_cache[t] for t in texts])

    @torch.no_grad()
    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        out = []
        for sl in runtime.batches(len(images), self.batch_size):
            pix = preprocess(images[sl].to(self.device), self.size, self.mean, self.std).to(dtype)
            out.append(self.model.encode_image(pix, normalize=True).float())
        return torch.cat(out)



def hpsv2(path: str = DEFAULT_REPO, checkpoint: str = CHECKPOINT, arch: str = ARCH, device: str = "auto",
          dtype: str = "fp32", batch_size: int = 64, weights_only: bool = True) -> HpsScorer:
    """HPSv2.1 of ``path``: a folder holding ``checkpoint`` (and optionally ``open_clip_config.json``), the
    checkpoint file itself, or a hub id (default ``xswu/HPSv2``). ``weights_only``: see ``state_dict``."""
    runtime.require("open_clip", "open_clip_torch", "hpsv2")
    path = runtime.check_source(path, "hpsv2")
    dev = runtime.resolve_device(device)
    torch_dtype = runtime.resolve_dtype(dtype, dev)
    p = Path(path)
    key = ("hpsv2", str(p.resolve()) if p.exists() else path, checkpoint, arch, str(dev), str(torch_dtype))
    model, tokenizer = runtime.resident(key, lambda: load_hps(path, checkpoint, arch, dev, torch_dtype,
                                                              weights_only))
    return HpsScorer(model, tokenizer, dev, batch_size)


REWARDS = {
    "hpsv2": RewardSpec("hpsv2", hpsv2, "HPSv2.1", "HPSv2.1: cosine of an open_clip ViT-H-14 fine-tuned on human "
                        "preferences (HPS_v2.1_compressed.pt; reward_models.hpsv2.path: a folder holding it or a "
                        "hub id)", scale="cosine, ~0.28-0.36", source=f"{DEFAULT_REPO} ({CHECKPOINT})"),
}
