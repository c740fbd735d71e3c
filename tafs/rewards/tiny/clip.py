"""A tiny random ``CLIPModel`` saved in the layout of ``openai/clip-vit-large-patch14`` (hub layout).

config.json + model.safetensors, the tokenizer files and preprocessor_config.json, so the ``clip`` reward
loads it with the code that loads the real model. 224 px input (what the real processor asks for) with
32 px patches keeps the vision tower at 49 tokens; the tokenizer is the character-level ``CLIPTokenizer``
of ``tafs.models.tiny`` (lowercase letters, digits and ``.,'-``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

IMAGE_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def tiny_clip_model(vocab_size: int, seed: int = 0, hidden_act: str = "quick_gelu",
                    logit_scale: float = math.log(1 / 0.07)):
    """A 2-layer CLIPModel (width 32, projection 16) for 224 px images and 77-token texts."""
    from transformers import CLIPConfig, CLIPModel

    text = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, hidden_act=hidden_act, bos_token_id=0,
                eos_token_id=1, pad_token_id=1)
    vision = dict(image_size=IMAGE_SIZE, patch_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, num_channels=3, hidden_act=hidden_act)
    torch.manual_seed(seed)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16, logit_scale_init_value=logit_scale)
    return CLIPModel(config).eval()


def image_processor():
    """The real CLIP processor settings: short side to 224 (bicubic), centre crop 224, CLIP mean/std."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                              resample=3, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))


def save_clip_folder(folder: Path, seed: int = 0, hidden_act: str = "quick_gelu",
                     logit_scale: float = math.log(1 / 0.07)) -> Path:
    """Model, tokenizer and image processor, each saved by its own ``save_pretrained`` (the hub layout)."""
    from tafs.models.tiny import clip_tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = clip_tokenizer(77)
    tiny_clip_model(len(tokenizer), seed, hidden_act, logit_scale).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    image_processor().save_pretrained(folder)
    return folder


def save_tiny(folder: Path, seed: int = 0) -> Path:
    """A tiny random stand-in for ``openai/clip-vit-large-patch14`` (quick_gelu, like OpenAI's CLIP)."""
    return save_clip_folder(folder, seed)
