"""Tiny random GenEval models in the hub layouts of ``facebook/mask2former-swin-small-coco-instance`` and
``openai/clip-vit-large-patch14``: ``folder/detector`` and ``folder/clip``.

``Mask2FormerForUniversalSegmentation`` (a tiny Swin backbone, COCO's 80 instance labels spelt as the
transformers/Detectron2 release spells them: "mouse", "remote", "keyboard", which the detector maps to
GenEval's names) + its ``Mask2FormerImageProcessor`` config (size 64), and a tiny ``CLIPModel`` with a
character-level ``CLIPTokenizer`` and a 32 px ``CLIPImageProcessor``. The reward loads them through the same
code path as the real repositories (``detector=folder/"detector", clip=folder/"clip"``).

The weights are random except one, and there is a single query: the class head's bias favours "mouse"
(GenEval's "computer mouse"), so each image has one computer-mouse detection (score ~0.5: above GenEval's
0.3, below the counting threshold 0.9) wherever the random mask is non-empty. The reward's colour, position
and counting paths then run with verdicts a test can work out by hand; they say nothing about images.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tafs.rewards.geneval.rules import CLASSES

# COCO's 80 instance classes as transformers' Mask2Former configs name them (GenEval renames three).
COCO_LABELS = [{"computer mouse": "mouse", "tv remote": "remote", "computer keyboard": "keyboard"}.get(c, c)
               for c in CLASSES]
FAVOURED = COCO_LABELS.index("mouse")
DETECTOR_SIZE = 64


def tiny_detector(seed: int = 0):
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    torch.manual_seed(seed)
    swin = SwinConfig(image_size=DETECTOR_SIZE, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1],
                      num_heads=[1, 1, 2, 2], window_size=7, drop_path_rate=0.0,
                      out_features=["stage1", "stage2", "stage3", "stage4"])
    id2label = dict(enumerate(COCO_LABELS))
    config = Mask2FormerConfig(backbone_config=swin, feature_size=32, mask_feature_size=32, hidden_dim=32,
                               encoder_feedforward_dim=64, dim_feedforward=64, encoder_layers=1, decoder_layers=2,
                               num_attention_heads=2, num_queries=1, id2label=id2label,
                               label2id={v: k for k, v in id2label.items()})
    model = Mask2FormerForUniversalSegmentation(config).eval()
    with torch.no_grad():
        model.class_predictor.bias[FAVOURED] += 12.0
    return model


def tiny_clip(seed: int = 0):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from tafs.models.tiny import clip_tokenizer

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(77)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                  num_attention_heads=4)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, tokenizer, processor


def save_tiny(folder: Path, seed: int = 0) -> Path:
    """Write ``folder/detector`` and ``folder/clip``; returns ``folder``."""
    from transformers import Mask2FormerImageProcessor

    folder = Path(folder)
    tiny_detector(seed).save_pretrained(folder / "detector")
    Mask2FormerImageProcessor(size={"shortest_edge": DETECTOR_SIZE, "longest_edge": 2 * DETECTOR_SIZE},
                              size_divisor=32).save_pretrained(folder / "detector")
    for part in tiny_clip(seed):
        part.save_pretrained(folder / "clip")
    return folder
