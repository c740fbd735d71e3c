"""CLIP score as a reward: cosine similarity of a ``CLIPModel``'s image and text embeddings.

One code path for every CLIP-like scorer: ``openai/clip-vit-large-patch14`` from the hub on a
cluster, or the toy world's learned scorer, which the DAG trains and saves in the same folder layout
(``CLIPModel`` + tokenizer + ``CLIPImageProcessor``). Images are preprocessed in torch from the
processor's settings instead of going through PIL, so a batch never leaves the device.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from tafs.rewards.base import RewardSpec, check_batch

# PIL resample codes (as stored in preprocessor_config.json) -> torch interpolation modes.
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
# A hub repository id: "name" or "owner/name" (anything else that does not exist is a missing folder).
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def _size_pair(size: dict | int, where: str) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    if "shortest_edge" in size:
        return int(size["shortest_edge"]), int(size["shortest_edge"])
    raise ValueError(f"{where}: unsupported size {size!r}")


def _interpolation(resample) -> str:
    """The processor's resample setting (a PIL code or enum) as a torch mode; bicubic when unknown."""
    try:
        return _RESAMPLE.get(int(resample), "bicubic")
    except (TypeError, ValueError):
        return "bicubic"


def preprocess(images: torch.Tensor, processor) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1] -> the model's pixel values, as ``CLIPImageProcessor`` does it.

    Resize (antialiased) so the short side matches ``size``, centre-crop to ``crop_size``, then
    normalise with ``image_mean``/``image_std``. Rescaling (1/255) is skipped: inputs are already in
    [0, 1]. The resize is clamped to [0, 1] because bicubic overshoots at the toy world's hard edges.
    """
    x = images.float()
    crop_h, crop_w = _size_pair(processor.crop_size, "crop_size") if processor.do_center_crop else (None, None)
    if processor.do_resize:
        size = processor.size
        if isinstance(size, dict) and "shortest_edge" in size:
            short = int(size["shortest_edge"])
            h, w = x.shape[-2:]
            scale = short / min(h, w)
            target = (max(short, round(h * scale)), max(short, round(w * scale)))
        else:
            target = _size_pair(size, "size")
        if tuple(x.shape[-2:]) != target:
            mode = _interpolation(processor.resample)
            x = F.interpolate(x, size=target, mode=mode, antialias=mode != "nearest",
                              **({} if mode == "nearest" else {"align_corners": False})).clamp(0, 1)
    if crop_h is not None:
        h, w = x.shape[-2:]
        if h < crop_h or w < crop_w:
            raise ValueError(f"image {h}x{w} is smaller than the crop {crop_h}x{crop_w} (do_resize is off)")
        top, left = (h - crop_h) // 2, (w - crop_w) // 2
        x = x[..., top:top + crop_h, left:left + crop_w]
    if processor.do_normalize:
        mean = torch.tensor(processor.image_mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(processor.image_std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) / std
    return x


def _pooled(out) -> torch.Tensor:
    """``get_*_features`` returns a tensor (transformers 4) or an output with ``pooler_output`` (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipScorer:
    """A reward: cosine(image embedding, text embedding), in [-1, 1]; ``score(texts, images)`` without metadata.

    Text embeddings are cached per prompt: a GRPO group scores many images of one prompt.
    """

    def __init__(self, model, tokenizer, processor, device: str | torch.device = "cpu", batch_size: int = 256):
        self.model = model.to(device).eval()
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

    def __call__(self, prompts: Sequence[str], metadata: Sequence[Mapping], images: torch.Tensor) -> torch.Tensor:
        check_batch(prompts, metadata, images)
        return self.score(list(prompts), images)

    def score(self, texts: list[str], images: torch.Tensor) -> torch.Tensor:
        check_batch(texts, texts, images)
        sims = (self.text_embeddings(list(texts)) * self.image_embeddings(images)).sum(-1)
        return sims.clamp(-1, 1).to("cpu", torch.float32)


def load_clip(path: str, device: str | torch.device = "cpu", batch_size: int = 256) -> ClipScorer:
    """Load model, tokenizer and image processor from a local folder or a hub id."""
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    p = Path(path)
    if not p.exists() and (p.is_absolute() or str(path).startswith(".") or not _HUB_ID.match(str(path))):
        raise FileNotFoundError(f"clip reward: no model folder at {path!r} (and not a hub id)")
    try:
        model = CLIPModel.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        processor = CLIPImageProcessor.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise OSError(f"clip reward: cannot load a CLIP model from {path!r}: {e}") from e
    return ClipScorer(model, tokenizer, processor, device=device, batch_size=batch_size)


def clip(path: str, device: str = "cpu", batch_size: int = 256) -> ClipScorer:
    """CLIP score (cosine similarity) of a ``CLIPModel`` at ``path`` (local folder or hub id)."""
    return load_clip(path, device=device, batch_size=batch_size)


REWARDS = {
    "clip": RewardSpec("clip", clip, "CLIP score", "cosine similarity of a transformers CLIPModel's image and "
                       "text embeddings (reward_models.clip.path: a folder in the hub layout or a hub id)"),
}
