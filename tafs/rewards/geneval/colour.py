"""GenEval's colour classifier: CLIP zero-shot over 10 colours on each object's crop, background grey.

GenEval (``evaluate_images.py``, ``ImageCrops`` + ``color_classification``): the image composited over a
plain ``#999`` image through the object's mask (outside the mask -> grey 153/255 = 0.6), cropped to the
object's box (PIL ``crop``, which rounds the coordinates), then the CLIP transform (short side to 224
bicubic, centre crop 224, CLIP mean/std). The classifier of an object class is, per colour, the mean of
the normalised text embeddings of three templates ("a photo of a {c} {object}", "a photo of a
{c}-colored {object}", "a photo of a {c} object"; the article is never adjusted), normalised again
(``clip_benchmark``'s ``zero_shot_classifier``); the prediction is the argmax of cosine similarity.

GenEval uses open_clip's ``ViT-L-14`` with OpenAI's weights; transformers' ``openai/clip-vit-large-patch14``
holds the same weights. Differences: the resize runs in torch (antialiased bicubic on floats) instead of PIL
on 8-bit images, so pixel values differ by rounding; crops whose long side exceeds 4x the short one are first
trimmed to their central part (the part the centre crop keeps, plus a margin) so a sliver of a mask cannot
blow the resize up to a huge image; boxes are clamped to the image (PIL pads outside with black).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from tafs.rewards.clip_score import ClipScorer, preprocess
from tafs.rewards.geneval.rules import COLORS

TEMPLATES = ("a photo of a {color} {cls}", "a photo of a {color}-colored {cls}", "a photo of a {color} object")
GREY = 0x99 / 255  # GenEval's default bgcolor "#999"
MAX_ASPECT = 4  # crops longer than this many times their width are trimmed before the resize


def crop_on_grey(image: torch.Tensor, mask: torch.Tensor | None, box: Sequence[float]) -> torch.Tensor:
    """(3, H, W) image, (H, W) bool mask (or None: no compositing) and box -> the (3, h, w) crop with every
    pixel outside the mask set to GenEval's grey. Box coordinates are rounded as PIL's ``crop`` does and
    clamped to the image (at least one pixel)."""
    h, w = image.shape[-2:]
    x0, y0, x1, y1 = (int(round(float(v))) for v in box[:4])
    x0, y0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
    x1, y1 = min(max(x1, x0 + 1), w), min(max(y1, y0 + 1), h)
    crop = image[:, y0:y1, x0:x1]
    if mask is None:
        return crop
    keep = torch.as_tensor(mask, device=image.device)[y0:y1, x0:x1].bool()
    return torch.where(keep, crop, torch.full_like(crop, GREY))


def trim(crop: torch.Tensor) -> torch.Tensor:
    """Keep the central part of a very elongated crop: after the short side is resized to the crop size,
    the centre crop only sees the central short-side-long stretch of the long side (the output may move by
    one pixel from rounding of the resized size)."""
    h, w = crop.shape[-2:]
    short, long = min(h, w), max(h, w)
    if long <= MAX_ASPECT * short:
        return crop
    keep = MAX_ASPECT * short  # 1.5 short sides of margin: far more than the bicubic kernel's reach
    start = (long - keep) // 2
    return crop[..., :, start:start + keep] if w > h else crop[..., start:start + keep, :]


class ColourClassifier:
    """Colours of object crops with a CLIP model (a ``ClipScorer``: model, tokenizer, image processor)."""

    def __init__(self, clip: ClipScorer, batch_size: int = 16):
        self.clip = clip
        self.batch_size = batch_size
        self._classifiers: dict[str, torch.Tensor] = {}

    def classifier(self, cls: str) -> torch.Tensor:
        """(10, D) unit text embeddings of the colours for object class ``cls`` (templates averaged)."""
        if cls not in self._classifiers:
            texts = [t.format(color=c, cls=cls) for c in COLORS for t in TEMPLATES]
            emb = self.clip.text_embeddings(texts).view(len(COLORS), len(TEMPLATES), -1).mean(1)
            self._classifiers[cls] = F.normalize(emb, dim=-1)
        return self._classifiers[cls]

    def pixels(self, crops: Sequence[torch.Tensor]) -> torch.Tensor:
        """Each crop through the CLIP image transform (one at a time: their sizes differ)."""
        return torch.cat([preprocess(trim(c)[None], self.clip.processor) for c in crops])

    @torch.no_grad()
    def image_features(self, crops: Sequence[torch.Tensor]) -> torch.Tensor:
        model = self.clip.model
        dtype = next(model.parameters()).dtype
        feats = []
        for i in range(0, len(crops), self.batch_size):
            pix = self.pixels(crops[i:i + self.batch_size]).to(self.clip.device, dtype)
            out = model.get_image_features(pixel_values=pix)
            feats.append(F.normalize((out if isinstance(out, torch.Tensor) else out.pooler_output).float(), dim=-1))
        return torch.cat(feats)

    def classify(self, crops: Sequence[torch.Tensor], classes: Sequence[str]) -> list[str]:
        """The colour of each crop (``crop_on_grey``) of an object of class ``classes[i]``."""
        if not crops:
            return []
        feats = self.image_features(crops)
        return [COLORS[int((f @ self.classifier(c).T).argmax())] for f, c in zip(feats, classes)]

