"""CLIP score as a reward: ``scale`` x cosine similarity of a ``CLIPModel``'s image and text embeddings.

One code path for every transformers CLIP-like scorer: ``openai/clip-vit-large-patch14`` from the hub
on a cluster, PickScore (``tafs.rewards.pickscore``, the same classes with another scale), or the toy
world's learned scorer, which the DAG trains and saves in the same folder layout (``CLIPModel`` +
tokenizer + ``CLIPImageProcessor``). Images are preprocessed in torch from the processor's settings
instead of going through PIL, so a batch never leaves the device.

The paper's CLIP score is 100 x cosine (~26-30 for SD3/Flux images); ``ClipScorer.score`` itself stays
the plain cosine (the toy scorer is trained and ranked on it), and the factory's ``scale`` multiplies it.
The reward's name, spec and factory are in ``tafs.rewards.clip``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from tafs.rewards import runtime
from tafs.rewards.base import check_batch

# PIL resample codes (as stored in preprocessor_config.json) -> torch interpolation modes.
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def _size_get(size, key: str) -> int | None:
    """A field of a processor size: a plain dict (older transformers) or a ``SizeDict`` (transformers 5)."""
    value = size.get(key) if hasattr(size, "get") else None
    return None if value is None else int(value)


def _size_pair(size, where: str) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w, short = _size_get(size, "height"), _size_get(size, "width"), _size_get(size, "shortest_edge")
    if h is not None and w is not None:
        return h, w
    if short is not None:
        return short, short
    raise ValueError(f"{where}: unsupported size {size!r}")


def _resize_target(size, h: int, w: int) -> tuple[int, int]:
    """The resized (height, width): the short side to ``shortest_edge`` and the long side truncated, as
    transformers' ``get_resize_output_image_size`` does; or a fixed (height, width)."""
    short = None if isinstance(size, int) else _size_get(size, "shortest_edge")
    if short is None:
        return _size_pair(size, "size")
    if h <= w:
        return short, int(short * w / h)
    return int(short * h / w), short


def _interpolation(resample) -> str:
    """The processor's resample setting (a PIL code or enum) as a torch mode; bicubic when unknown."""
    try:
        return _RESAMPLE.get(int(resample), "bicubic")
    except (TypeError, ValueError):
        return "bicubic"


def resize(x: torch.Tensor, target: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Antialiased resize of float images in [0, 1], clamped back to [0, 1]: bicubic overshoots at hard edges
    (the toy world's shapes), and PIL's uint8 output clamps there too."""
    if tuple(x.shape[-2:]) == tuple(target):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=target, mode=mode)
    return F.interpolate(x, size=target, mode=mode, antialias=True, align_corners=False).clamp(0, 1)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def preprocess(images: torch.Tensor, processor) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1] -> the model's pixel values, as ``CLIPImageProcessor`` does it.

    Resize (antialiased) so the short side matches ``size``, centre-crop to ``crop_size``, then
    normalise with ``image_mean``/``image_std``. Rescaling (1/255) is skipped: inputs are already in
    [0, 1].
    """
    x = images.float()
    if processor.do_resize:
        x = resize(x, _resize_target(processor.size, *x.shape[-2:]), _interpolation(processor.resample))
    if processor.do_center_crop:
        crop_h, crop_w = _size_pair(processor.crop_size, "crop_size")
        h, w = x.shape[-2:]
        if h < crop_h or w < crop_w:
            raise ValueError(f"image {h}x{w} is smaller than the crop {crop_h}x{crop_w} (do_resize is off)")
        top, left = (h - crop_h) // 2, (w - crop_w) // 2
        x = x[..., top:top + crop_h, left:left + crop_w]
    if processor.do_normalize:
        x = normalize(x, processor.image_mean, processor.image_std)
    return x


def _pooled(out) -> torch.Tensor:
    """``get_*_features`` returns a tensor (transformers 4) or an output with ``pooler_output`` (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class CosineScorer(ABC):
    """A reward from unit-norm embeddings: cosine(image, text) in [-1, 1]. Subclasses give ``text_embeddings``
    and ``image_embeddings`` (normalised); ``score(texts, images)`` works without metadata."""

    @abstractmethod
    def text_embeddings(self, texts: list[str]) -> torch.Tensor: ...

    @abstractmethod
    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor: ...

    def __call__(self, prompts: Sequence[str], metadata: Sequence[Mapping], images: torch.Tensor) -> torch.Tensor:
        check_batch(prompts, metadata, images)
        return self.score(list(prompts), images)

    def score(self, texts: list[str], images: torch.Tensor) -> torch.Tensor:
        check_batch(texts, texts, images)
        sims = (self.text_embeddings(list(texts)) * self.image_embeddings(images)).sum(-1)
        return sims.clamp(-1, 1).to("cpu", torch.float32)


class ClipScorer(CosineScorer):
    """A reward: cosine(image embedding, text embedding), in [-1, 1]; ``score(texts, images)`` without metadata.

    Text embeddings are cached per prompt: a GRPO group scores many images of one prompt.
    """

    def __init__(self, model, tokenizer, processor, device: str | torch.device = "cpu", batch_size: int = 256):
        self.model = model.to(device).eval()  # grads stay as they are: the toy scorer is trained in between
        self.tokenizer = tokenizer
        self.processor = processor
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_tokens = int(model.config.text_config.max_position_embeddings)
        self._text_cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        missing = sorted({t for t in texts if t not in self._text_cache})
        for i in range(0, len(missing), self.batch_size):
            chunk = missing[i:i + self.batch_size]
            tok = self.tokenizer(chunk, padding="max_length", max_length=self.max_tokens, truncation=True,
                                 return_tensors="pt")
            emb = _pooled(self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                                       attention_mask=tok["attention_mask"].to(self.device)))
            for t, e in zip(chunk, F.normalize(emb.float(), dim=-1)):
                self._text_cache[t] = e
        return torch.stack([self._text_cache[t] for t in texts])

    @torch.no_grad()
    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        out = []
        for i in range(0, len(images), self.batch_size):
            pix = preprocess(images[i:i + self.batch_size].to(self.device), self.processor).to(dtype)
            out.append(F.normalize(_pooled(self.model.get_image_features(pixel_values=pix)).float(), dim=-1))
        return torch.cat(out)



class ScaledScorer:
    """A reward: ``factor`` x a ``ClipScorer``'s cosine (CLIP score: 100; PickScore: logit_scale.exp() / scale)."""

    def __init__(self, scorer: ClipScorer, factor: float):
        self.scorer = scorer
        self.factor = float(factor)

    def __call__(self, prompts: Sequence[str], metadata: Sequence[Mapping], images: torch.Tensor) -> torch.Tensor:
        check_batch(prompts, metadata, images)
        return self.score(list(prompts), images)

    def score(self, texts: list[str], images: torch.Tensor) -> torch.Tensor:
        return self.scorer.score(texts, images) * self.factor


def _key_path(path: str) -> str:
    """One cache key per model: a local folder by its resolved path, a hub id as given."""
    p = Path(path)
    return str(p.resolve()) if p.exists() else str(path)


def load_parts(path: str, reward: str, processor: str | None = None, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32, auto_model: bool = False) -> tuple:
    """(model, tokenizer, image processor) from ``path`` (model) and ``processor`` (tokenizer and image
    processor; default: ``path``). They are loaded separately, not through ``AutoProcessor``, which picks its
    class from a model config and returns a bare tokenizer for a folder of processor files without one."""
    from transformers import AutoModel, AutoTokenizer, CLIPImageProcessor, CLIPModel

    path = runtime.check_source(path, reward)
    processor = path if processor is None else runtime.check_source(processor, reward)
    try:
        model = (AutoModel if auto_model else CLIPModel).from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as e:
        raise OSError(f"{reward} reward: cannot load a CLIP model from {path!r}: {e}") from e
    try:
        tokenizer = AutoTokenizer.from_pretrained(processor)
        image_processor = CLIPImageProcessor.from_pretrained(processor)
    except (OSError, ValueError) as e:
        raise OSError(f"{reward} reward: cannot load a CLIP tokenizer and image processor from "
                      f"{processor!r}: {e}") from e
    return model.to(device).eval().requires_grad_(False), tokenizer, image_processor


def resident_scorer(path: str, reward: str, processor: str | None = None, device: str = "auto",
                    dtype: str = "fp32", batch_size: int = 64, auto_model: bool = False) -> ClipScorer:
    """A ``ClipScorer`` whose model is loaded once per process (``runtime.resident``), whatever the batch size.

    Keyed by the folder's resolved path: a model rewritten in place during the process is not reloaded
    (``runtime.clear_resident()`` forgets every loaded model)."""
    dev = runtime.resolve_device(device)
    torch_dtype = runtime.resolve_dtype(dtype, dev)
    key = ("clip-family", _key_path(str(path)), None if processor is None else _key_path(str(processor)),
           str(dev), str(torch_dtype), auto_model)
    parts = runtime.resident(key, lambda: load_parts(path, reward, processor, dev, torch_dtype, auto_model))
    return ClipScorer(*parts, device=dev, batch_size=batch_size)


def load_clip(path: str, device: str | torch.device = "cpu", batch_size: int = 256,
              dtype: str = "fp32") -> ClipScorer:
    """A cosine ``ClipScorer`` of the ``CLIPModel`` at ``path`` (local folder or hub id), loaded once."""
    return resident_scorer(str(path), "clip", device=str(device), dtype=dtype, batch_size=batch_size)
