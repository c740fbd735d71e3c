"""GenEval's object detector without mmdet: a transformers ``Mask2FormerForUniversalSegmentation`` (COCO
instance segmentation), with mmdet's test-time pre- and post-processing re-implemented in torch.

GenEval runs mmdet 2.x ``mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco``; transformers ships
``facebook/mask2former-swin-small-coco-instance``: the same architecture and data, but converted from the
original (Detectron2) release, i.e. other trained weights, so scores and detections differ somewhat.

Pre-processing follows mmdet's test pipeline, not the image processor: resize keeping the aspect ratio so
the image fits 1333 x 800 (a 1024 px image -> 800 px; bilinear, no antialias, as mmcv/cv2), normalise
with the processor's mean/std (ImageNet, as mmdet), zero-pad to a multiple of 32 (after normalising).

Post-processing is mmdet's ``MaskFormerFusionHead.instance_postprocess`` rather than transformers'
``post_process_instance_segmentation``, which differs in ways that change GenEval's counts: it upsamples
every mask to a fixed 384 x 384 before thresholding (ignoring the padding) and keeps ``num_queries`` instead
of 100 candidates. Here: the 100 best (query, class) pairs by class probability (softmax without the
no-object class); mask logits bilinearly upsampled to the padded input, cropped to the resized image,
upsampled to the original size; mask = logit > 0; score = class probability x mean sigmoid inside the
mask; box = the mask's extent (x1, y1 one past the last pixel, as mmdet's ``mask2bbox``). Candidates whose
class probability is at most ``min_score`` are dropped before upsampling: their score cannot exceed it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from tafs.rewards import runtime
from tafs.rewards.geneval.rules import CLASSES, Detection

MMDET_SCALE = (800, 1333)  # (short side, long side) of mmdet's test pipeline: img_scale=(1333, 800), keep_ratio
MAX_PER_IMAGE = 100  # mmdet test_cfg.max_per_image
# COCO label spellings of other releases -> GenEval's names (its object_names.txt renames three classes).
ALIASES = {"mouse": "computer mouse", "remote": "tv remote", "keyboard": "computer keyboard", "tvmonitor": "tv",
           "tv monitor": "tv", "tv-monitor": "tv", "motorbike": "motorcycle", "aeroplane": "airplane",
           "sofa": "couch", "pottedplant": "potted plant", "diningtable": "dining table",
           "hair dryer": "hair drier", "cellphone": "cell phone", "doughnut": "donut"}


def geneval_name(label: str) -> str | None:
    """A detector's class label as GenEval's class name; None for labels GenEval has no name for (stuff)."""
    name = " ".join(str(label).strip().lower().replace("_", " ").split())
    name = ALIASES.get(name, name)
    return name if name in CLASSES else None


def class_names(id2label: dict) -> list[str | None]:
    """GenEval names by class index from a model config's ``id2label``; at least one must be a COCO class."""
    labels = {int(k): v for k, v in id2label.items()}
    names = [geneval_name(labels[i]) if i in labels else None for i in range(max(labels) + 1)]
    if not any(names):
        raise ValueError(f"geneval detector: none of its labels is a COCO class ({list(labels.values())[:5]}...); "
                         "give a Mask2Former COCO instance-segmentation model")
    return names


def resized_size(h: int, w: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv's keep-ratio rescale: the largest size with short side <= scale[0] and long side <= scale[1]."""
    factor = min(scale[1] / max(h, w), scale[0] / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) float boxes x0, y0, x1 + 1, y1 + 1 (mmdet's ``mask2bbox``; zeros if empty)."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, 4), dtype=torch.float32)
    cols, rows = masks.any(dim=1), masks.any(dim=2)  # (N, W), (N, H)
    w, h = cols.shape[1], rows.shape[1]
    x0, y0 = cols.float().argmax(1), rows.float().argmax(1)
    x1, y1 = w - cols.flip(1).float().argmax(1), h - rows.flip(1).float().argmax(1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(cols.any(1, keepdim=True), boxes, torch.zeros_like(boxes))


class Detector:
    """Instance segmentation -> ``Detection``s (GenEval class names, scores, boxes, masks at image size)."""

    def __init__(self, model, processor, device: torch.device, scale: Sequence[int] | None = MMDET_SCALE,
                 batch_size: int = 16):
        self.model = model.to(device).eval().requires_grad_(False)
        self.device = device
        self.dtype = next(model.parameters()).dtype
        self.names = class_names(model.config.id2label)
        self.mean = list(getattr(processor, "image_mean", None) or [0.485, 0.456, 0.406])
        self.std = list(getattr(processor, "image_std", None) or [0.229, 0.224, 0.225])
        self.divisor = int(getattr(processor, "size_divisor", 32) or 32)
        self.scale = tuple(int(s) for s in scale) if scale is not None else _processor_scale(processor)
        self.batch_size = batch_size

    def preprocess(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(N, 3, H, W) in [0, 1] -> normalised, resized, zero-padded pixels and the resized (h, w)."""
        size = resized_size(images.shape[-2], images.shape[-1], self.scale)
        x = images.float()
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        ph, pw = (math.ceil(s / self.divisor) * self.divisor for s in size)
        return F.pad(x, (0, pw - size[1], 0, ph - size[0])), size

    @torch.no_grad()
    def detect(self, images: torch.Tensor, min_score: float = 0.0) -> list[list[Detection]]:
        """Detections of every image (N, 3, H, W) in [0, 1] with a score possibly above ``min_score``."""
        out: list[list[Detection]] = []
        for part in runtime.batches(len(images), self.batch_size):
            chunk = images[part].to(self.device)
            pixels, size = self.preprocess(chunk)
            pred = self.model(pixel_values=pixels.to(self.dtype))
            for cls_logits, mask_logits in zip(pred.class_queries_logits, pred.masks_queries_logits):
                out.append(self.postprocess(cls_logits.float(), mask_logits.float(), tuple(pixels.shape[-2:]),
                                            size, tuple(chunk.shape[-2:]), min_score))
        return out

    def postprocess(self, cls_logits: torch.Tensor, mask_logits: torch.Tensor, padded: tuple[int, int],
                    size: tuple[int, int], original: tuple[int, int], min_score: float) -> list[Detection]:
        """One image's (Q, C + 1) class logits and (Q, h, w) mask logits -> its detections (module docstring)."""
        probs = cls_logits.softmax(-1)[:, :-1]
        n_cls = probs.shape[1]
        top, index = probs.flatten().topk(min(MAX_PER_IMAGE, probs.numel()))
        labels, queries = index % n_cls, index // n_cls
        known = torch.tensor([self.names[i] is not None if i < len(self.names) else False for i in range(n_cls)],
                             device=probs.device)
        keep = (top > min_score) & known[labels]
        if not keep.any():
            return []
        top, labels, queries = top[keep], labels[keep], queries[keep]
        logits = F.interpolate(mask_logits[queries][None], size=padded, mode="bilinear", align_corners=False)
        logits = logits[..., :size[0], :size[1]]
        if tuple(size) != tuple(original):
            logits = F.interpolate(logits, size=original, mode="bilinear", align_corners=False)
        logits = logits[0]
        binary = logits > 0
        mask_score = (logits.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
        scores, boxes = (top * mask_score).tolist(), mask_boxes(binary).tolist()
        return [Detection(self.names[int(c)], s, tuple(b), mask=m)  # type: ignore[arg-type]
                for c, s, b, m in zip(labels.tolist(), scores, boxes, binary)]


def _processor_scale(processor) -> tuple[int, int]:
    """(short, long) from an image processor's ``size`` ({shortest_edge, longest_edge}, dict or SizeDict)."""
    size = processor.size
    get = size.get if hasattr(size, "get") else (lambda k: getattr(size, k, None))
    short, long = get("shortest_edge"), get("longest_edge")
    if not short:
        raise ValueError(f"geneval detector: the image processor's size {size!r} has no shortest_edge; "
                         "give detector_size: [short, long]")
    return int(short), int(long or 1333)


def load_detector(path: str, device: str = "auto", dtype: str = "fp32", scale: Sequence[int] | None = MMDET_SCALE,
                  batch_size: int = 16) -> Detector:
    """A Mask2Former COCO instance model from a folder or hub id, loaded once per process (``runtime.resident``)."""
    path = runtime.check_source(path, "geneval")
    dev = runtime.resolve_device(device)
    torch_dtype = runtime.resolve_dtype(dtype, dev)

    def load():
        from transformers import Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor

        try:
            model = Mask2FormerForUniversalSegmentation.from_pretrained(path, dtype=torch_dtype)
            processor = Mask2FormerImageProcessor.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise OSError(f"geneval reward: cannot load a Mask2Former detector from {path!r}: {e}") from e
        return model.to(dev).eval().requires_grad_(False), processor

    key = str(Path(path).resolve()) if Path(path).exists() else path
    model, processor = runtime.resident(("geneval-detector", key, str(dev), str(torch_dtype)), load)
    return Detector(model, processor, dev, scale=scale, batch_size=batch_size)
