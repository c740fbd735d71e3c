"""A tiny random ImageReward in the hub layout of ``THUDM/ImageReward``: ``ImageReward.pt`` (a torch pickle of the
state dict under the original names: ``blip.visual_encoder.*``, ``blip.text_encoder.*``, ``blip.vision_proj.*``,
``blip.text_proj.*``, ``mlp.layers.*``), ``med_config.json`` (BLIP's BERT config) and, unlike the real repository,
a BERT tokenizer (a hand-written ``vocab.txt``, lower-cased), so the reward loads offline.

The state dict is the inverse of the reward's mapping applied to randomly initialised transformers modules, plus
the keys the real checkpoint carries that the reward drops (BLIP's contrastive projections, the text position-id
buffer). ``bench/imagereward_reference_check.py`` loads it strictly into the ``image-reward`` package's own model.

What differs from the real model: every width and depth (vision 128 wide, 2 blocks, 2 heads of 64 at 224 px with
16 px patches; text 32 wide, 2 layers), the vocabulary and so the token ids; the MLP head keeps its real widths
after its input (1024 -> 128 -> 64 -> 16 -> 1). The weights are random: the scores test plumbing, not quality.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

VISION = {"width": 128, "layers": 2, "patch": 16, "image_size": 224}
MED = {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
       "hidden_dropout_prob": 0.1, "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 64,
       "layer_norm_eps": 1e-12, "max_position_embeddings": 64, "model_type": "bert", "num_attention_heads": 2,
       "num_hidden_layers": 2, "pad_token_id": 0, "type_vocab_size": 2, "encoder_width": 128,
       "add_cross_attention": True}
MLP_WIDTHS = (1024, 128, 64, 16, 1)
EMBED_DIM = 256  # BLIP_Pretrain's vision_proj / text_proj width
SPECIALS = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["a", "an", "the", "of", "on", "in", "with", "and", "at", "photo", "picture", "image", "painting", "drawing",
         "cat", "dog", "bird", "horse", "car", "tree", "house", "apple", "banana", "cup", "table", "chair", "red",
         "green", "blue", "yellow", "black", "white", "small", "large", "two", "three", "left", "right", "above",
         "below", ",", ".", "##s", "##ing", "##ed"]


def vocabulary() -> list[str]:
    """bert-base-uncased's layout in small: specials first ([PAD] = 0), then words and single characters."""
    chars = [c for c in "abcdefghijklmnopqrstuvwxyz0123456789"] + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    out: list[str] = []
    for tok in SPECIALS + WORDS + chars:
        if tok not in out:
            out.append(tok)
    return out


def _randomize(name: str, t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random values with O(1) activations (the default inits, e.g. BLIP vision's 1e-10, flatten the scores)."""
    noise = torch.randn(t.shape, generator=gen)
    if t.ndim == 1:  # LayerNorm weights around 1, other vectors (biases, LayerNorm biases) small
        return 1 + 0.1 * noise if "norm" in name.lower() and name.endswith("weight") else 0.05 * noise
    if name.endswith(("word_embeddings.weight", "position_embeddings.weight", "cls_token", "pos_embed")):
        return 0.5 * noise
    return noise / math.sqrt(math.prod(t.shape[1:]))


def _modules(vocab_size: int):
    """Randomly initialised transformers modules of the tiny config, built the way the reward builds them."""
    from transformers import BlipVisionModel
    from transformers.models.blip.modeling_blip_text import BlipTextModel

    from tafs.rewards.imagereward import ImageRewardModel, VisionShape, mlp_head, text_config

    w = VISION["width"]
    shape = VisionShape(w, VISION["layers"], VISION["patch"], VISION["image_size"], 4 * w)  # BLIP mlp_ratio 4
    widths = (MED["hidden_size"],) + MLP_WIDTHS
    head_shapes = {f"{i}.weight": torch.empty(o, n) for i, n, o in zip((0, 2, 4, 6, 7), widths, widths[1:])}
    text = BlipTextModel(text_config({**MED, "vocab_size": vocab_size}, w), add_pooling_layer=False)
    return ImageRewardModel(BlipVisionModel(shape.config()), text, mlp_head(head_shapes))


def original_state_dict(vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The tiny model's state dict under the ImageReward checkpoint's names, with the keys the reward ignores."""
    from tafs.rewards.imagereward import to_original

    gen = torch.Generator().manual_seed(seed)
    state = {k: _randomize(k, v, gen).contiguous() for k, v in to_original(_modules(vocab_size)).items()}
    w, h = VISION["width"], MED["hidden_size"]
    state["blip.text_encoder.embeddings.position_ids"] = torch.arange(MED["max_position_embeddings"])[None]
    for name, width in (("vision_proj", w), ("text_proj", h)):
        state[f"blip.{name}.weight"] = torch.randn(EMBED_DIM, width, generator=gen) / math.sqrt(width)
        state[f"blip.{name}.bias"] = torch.zeros(EMBED_DIM)
    return state


def save_tiny(folder: Path, seed: int = 0) -> Path:
    """Write the tiny ImageReward (checkpoint, med config, tokenizer) into ``folder``."""
    from transformers import BertTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    vocab_size = len(vocab) + 2  # + BLIP's [DEC] and [ENC], as bert-base-uncased's 30522 + 2 = 30524
    (folder / "med_config.json").write_text(json.dumps({**MED, "vocab_size": vocab_size}, indent=2) + "\n")
    torch.save(original_state_dict(vocab_size, seed), folder / "ImageReward.pt")
    return folder
