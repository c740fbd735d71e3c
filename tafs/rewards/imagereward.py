"""ImageReward as a reward, in process: the ``THUDM/ImageReward`` checkpoint mapped onto transformers' BLIP classes.

The original model (github THUDM/ImageReward, ``ImageReward/ImageReward.py``) is BLIP's ViT (``vit='large'``:
ViT-L/16 at 224, LayerNorm eps 1e-6), BLIP's "med" BERT with a cross-attention block in every layer, and an MLP
head (no activations between its Linears). ``score()`` tokenises the prompt with bert-base-uncased (plus BLIP's
added ``[DEC]``/``[ENC]`` tokens; it keeps ``[CLS]`` at position 0, no ``[ENC]`` substitution), padding to 35
tokens, runs the text encoder with the image tokens as ``encoder_hidden_states``, feeds the ``[CLS]`` output to
the head and returns ``(raw - 0.16717) / 1.03334``.

Its ``image-reward`` package pins old dependencies (timm 0.6.13, OpenAI's git-only ``clip``; its ``med.py`` no
longer imports with transformers 5), so the checkpoint, a torch pickle of the ImageReward state dict, is mapped
here: ``blip.visual_encoder.*`` onto ``BlipVisionModel`` (a one-to-one renaming: both fuse q, k, v in one
``qkv`` Linear with the same (3, heads, head_dim) layout), ``blip.text_encoder.*`` onto ``BlipTextModel``
(transformers' port of the same med BERT: identical names), ``mlp.layers.*`` onto an ``nn.Sequential`` with the
original indices. BLIP's contrastive projections (``blip.vision_proj``, ``blip.text_proj``) are unused by
``score()`` and dropped, as is the text embeddings' ``position_ids`` buffer (an ``arange`` transformers rebuilds).
Everything else must load strictly.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tafs.rewards.base import RewardSpec, check_batch
from tafs.rewards.runtime import batches, check_source, require, resident, resolve_device, resolve_dtype

NAME = "imagereward"
DEFAULT_PATH = "THUDM/ImageReward"
DEFAULT_TOKENIZER = "bert-base-uncased"
CHECKPOINT, MED_CONFIG = "ImageReward.pt", "med_config.json"
MEAN, STD = 0.16717362830052426, 1.0333394966054072  # ImageReward.mean / .std
MAX_TOKENS = 35
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VISION_EPS = 1e-6  # vit.py: partial(nn.LayerNorm, eps=1e-6)
HEAD_DIM = 64  # BLIP's ViT-B (768 / 12 heads) and ViT-L (1024 / 16); the checkpoint does not store the head count
MLP_LINEARS = (0, 2, 4, 6, 7)  # indices of the Linears in ImageReward's MLP.layers (Dropouts at 1, 3, 5)
MLP_DROPOUTS = {1: 0.2, 3: 0.2, 5: 0.1}
VISION, TEXT, HEAD = "blip.visual_encoder.", "blip.text_encoder.", "mlp.layers."
# In the checkpoint, unused by score(): BLIP's image-text contrastive projections and a constant buffer.
IGNORED = ("blip.vision_proj.", "blip.text_proj.", "blip.text_encoder.embeddings.position_ids")

# BLIP vit.py names -> BlipVisionModel names ({i}: block index); prefixes, matched at the start of a key.
VISION_RULES = (
    ("cls_token", "embeddings.class_embedding"),
    ("pos_embed", "embeddings.position_embedding"),
    ("patch_embed.proj.", "embeddings.patch_embedding."),
    ("blocks.{i}.norm1.", "encoder.layers.{i}.layer_norm1."),
    ("blocks.{i}.attn.qkv.", "encoder.layers.{i}.self_attn.qkv."),
    ("blocks.{i}.attn.proj.", "encoder.layers.{i}.self_attn.projection."),
    ("blocks.{i}.norm2.", "encoder.layers.{i}.layer_norm2."),
    ("blocks.{i}.mlp.fc", "encoder.layers.{i}.mlp.fc"),
    ("norm.", "post_layernorm."),
)


def _rename(key: str, rules: Sequence[tuple[str, str]]) -> str | None:
    """``key`` with the first matching prefix rule applied (``{i}`` = a layer index), or None."""
    for src, dst in rules:
        pattern = "^" + re.escape(src).replace(re.escape("{i}"), r"(\d+)")
        m = re.match(pattern, key)
        if m:
            return (dst.replace("{i}", m.group(1)) if m.groups() else dst) + key[m.end():]
    return None


def vision_key(original: str) -> str | None:
    """A ``blip.visual_encoder`` key (without the prefix) as a ``BlipVisionModel`` key."""
    return _rename(original, VISION_RULES)


def original_vision_key(hf: str) -> str | None:
    """The inverse of ``vision_key``."""
    return _rename(hf, [(dst, src) for src, dst in VISION_RULES])


def split_checkpoint(state: Mapping[str, torch.Tensor]) -> tuple[dict, dict, dict]:
    """The ImageReward state dict -> (vision, text, head) state dicts in transformers/nn.Sequential names.

    Raises KeyError listing any key that is neither mapped nor one of the justified ``IGNORED`` ones.
    """
    vision, text, head, unknown = {}, {}, {}, []
    for key, value in state.items():
        if key.startswith(IGNORED):
            continue
        mapped = vision_key(key[len(VISION):]) if key.startswith(VISION) else None
        if mapped is not None:
            vision[mapped] = value
        elif key.startswith(TEXT):
            text[key[len(TEXT):]] = value
        elif key.startswith(HEAD):
            head[key[len(HEAD):]] = value
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"unexpected keys in the ImageReward checkpoint: {unknown[:10]} ({len(unknown)} in all)")
    return vision, text, head


def to_original(model: ImageRewardModel) -> dict[str, torch.Tensor]:
    """The model's parameters under the ImageReward checkpoint's names (``IGNORED`` keys not included)."""
    out = {VISION + original_vision_key(k): v for k, v in model.vision.state_dict().items()}
    out.update({TEXT + k: v for k, v in model.text.state_dict().items()})
    out.update({HEAD + k: v for k, v in model.head.state_dict().items()})
    return out


@dataclass(frozen=True)
class VisionShape:
    """What BLIP's ``create_vit`` fixes in code, read back from the checkpoint's tensor shapes."""

    width: int
    layers: int
    patch: int
    image_size: int
    intermediate: int

    @classmethod
    def of(cls, vision: Mapping[str, torch.Tensor]) -> VisionShape:
        pos, patch = vision["embeddings.position_embedding"], vision["embeddings.patch_embedding.weight"]
        grid = math.isqrt(pos.shape[1] - 1)
        layers = sum(1 for k in vision if k.endswith(".layer_norm1.weight"))
        return cls(int(pos.shape[-1]), layers, int(patch.shape[-1]), grid * int(patch.shape[-1]),
                   int(vision["encoder.layers.0.mlp.fc1.weight"].shape[0]))

    def config(self):
        from transformers import BlipVisionConfig

        return BlipVisionConfig(hidden_size=self.width, intermediate_size=self.intermediate,
                                num_hidden_layers=self.layers, num_attention_heads=max(1, self.width // HEAD_DIM),
                                image_size=self.image_size, patch_size=self.patch, hidden_act="gelu",
                                layer_norm_eps=VISION_EPS, attention_dropout=0.0)


def text_config(med: Mapping, encoder_width: int):
    """BLIP's med BertConfig (``med_config.json``) as a ``BlipTextConfig``; BLIP sets ``encoder_width`` to the
    vision width itself. ``is_decoder`` only makes transformers build the cross-attention blocks (the original's
    ``add_cross_attention``); the forward pass runs bidirectionally, as ``score()`` does."""
    from transformers import BlipTextConfig

    if not med.get("add_cross_attention", False):
        raise ValueError(f"{NAME} reward: {MED_CONFIG} has no add_cross_attention: true (not a BLIP med config)")
    return BlipTextConfig(
        vocab_size=med["vocab_size"], hidden_size=med["hidden_size"], encoder_hidden_size=encoder_width,
        intermediate_size=med["intermediate_size"], num_hidden_layers=med["num_hidden_layers"],
        num_attention_heads=med["num_attention_heads"], max_position_embeddings=med["max_position_embeddings"],
        hidden_act=med.get("hidden_act", "gelu"), layer_norm_eps=med.get("layer_norm_eps", 1e-12),
        pad_token_id=med.get("pad_token_id", 0), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        is_decoder=True, use_cache=False, bos_token_id=None, eos_token_id=None, sep_token_id=None)


def mlp_head(head: Mapping[str, torch.Tensor]) -> nn.Sequential:
    """ImageReward's ``MLP.layers`` with the widths of the checkpoint (768 -> 1024 -> 128 -> 64 -> 16 -> 1)."""
    layers: list[nn.Module] = []
    for i in range(max(MLP_LINEARS) + 1):
        if i in MLP_LINEARS:
            out_f, in_f = head[f"{i}.weight"].shape
            layers.append(nn.Linear(in_f, out_f))
        else:
            layers.append(nn.Dropout(MLP_DROPOUTS[i]))
    return nn.Sequential(*layers)


class ImageRewardModel(nn.Module):
    """BLIP vision tower + med BERT with cross-attention + MLP head; ``forward`` returns the raw reward (N,)."""

    def __init__(self, vision: nn.Module, text: nn.Module, head: nn.Sequential):
        super().__init__()
        self.vision, self.text, self.head = vision, text, head

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        image_embeds = self.vision(pixel_values=pixel_values).last_hidden_state
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        out = self.text(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds,
                        encoder_attention_mask=image_atts)
        cls = out.last_hidden_state[:, 0, :].float()
        return self.head(cls).squeeze(-1)


def build_model(state: Mapping[str, torch.Tensor], med: Mapping) -> ImageRewardModel:
    """Build the transformers modules from the checkpoint's shapes and ``med_config`` and load them strictly."""
    from transformers import BlipVisionModel
    from transformers.models.blip.modeling_blip_text import BlipTextModel

    vision_sd, text_sd, head_sd = split_checkpoint(state)
    shape = VisionShape.of(vision_sd)
    vision = BlipVisionModel(shape.config())
    text = BlipTextModel(text_config(med, shape.width), add_pooling_layer=False)
    head = mlp_head(head_sd)
    for part, sd in ((vision, vision_sd), (text, text_sd), (head, head_sd)):
        part.load_state_dict(sd, strict=True)  # raises on any missing/unexpected key or shape mismatch
    return ImageRewardModel(vision, text, head).eval()


def preprocess(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1] -> pixel values, as ImageReward's torchvision transform does on PIL images:
    ``Resize(size, BICUBIC)`` (short side; the long side truncated as torchvision does), ``CenterCrop(size)``,
    ``Normalize`` with CLIP's mean/std.

    The antialiased torch bicubic has PIL's kernel (a = -0.5). Like PIL, it resizes the width first, then the
    height, clipping to [0, 1] in between (PIL's intermediate image is 8-bit): on textured images bicubic
    overshoot would otherwise differ by several levels. PIL also rounds to 8 bits, which is not done here (no
    quantisation of a batch that may carry gradients); the remaining difference is about one level of 255.
    """
    x = images.float()
    h, w = x.shape[-2:]
    long = int(size * max(h, w) / min(h, w))
    target = (size, long) if h <= w else (long, size)
    for step in ((h, target[1]), target):  # horizontal pass, then vertical, as PIL does
        if tuple(x.shape[-2:]) != step:
            x = F.interpolate(x, size=step, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    top, left = round((target[0] - size) / 2.0), round((target[1] - size) / 2.0)
    x = x[..., top:top + size, left:left + size]
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def load_tokenizer(source: str):
    """BLIP's ``init_tokenizer``: a BertTokenizer plus ``[DEC]`` (bos) and ``[ENC]`` (additional special token),
    which take ids 30522 and 30523 in bert-base-uncased (the checkpoint's vocab_size 30524)."""
    from transformers import BertTokenizer

    try:
        tokenizer = BertTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise OSError(f"{NAME} reward: cannot load the BERT tokenizer from {source!r}: {e}") from e
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


def _local_file(folder: Path, name: str) -> Path:
    f = folder / name
    if not f.is_file():
        raise FileNotFoundError(f"{NAME} reward: {str(folder)!r} has no {name} (expected the {DEFAULT_PATH} "
                                f"layout: {CHECKPOINT} + {MED_CONFIG})")
    return f


def _hub_file(repo: str, name: str) -> Path:
    hub = require("huggingface_hub", "huggingface_hub", NAME)
    try:
        return Path(hub.hf_hub_download(repo_id=repo, filename=name))
    except Exception as e:  # offline, unknown repo, missing file: all mean "this file cannot be had"
        raise FileNotFoundError(f"{NAME} reward: cannot fetch {name} from the hub repository {repo!r}: {e}") from e


def model_files(path: str) -> tuple[Path, Path]:
    """(ImageReward.pt, med_config.json) of a local folder or a hub repository."""
    folder = Path(path)
    if folder.exists():
        return _local_file(folder, CHECKPOINT), _local_file(folder, MED_CONFIG)
    return _hub_file(path, CHECKPOINT), _hub_file(path, MED_CONFIG)


def tokenizer_source(path: str, tokenizer: str | None) -> str:
    """The ``tokenizer`` given, else the model folder when it holds one, else bert-base-uncased."""
    if tokenizer:
        return tokenizer
    folder = Path(path)
    if folder.is_dir() and any((folder / f).is_file() for f in ("vocab.txt", "tokenizer.json")):
        return str(folder)
    return DEFAULT_TOKENIZER


def load(path: str, tokenizer: str | None = None) -> tuple[ImageRewardModel, object]:
    """The model (fp32, CPU, eval) and its tokenizer from a folder or hub repository in the hub layout."""
    require("transformers", "transformers", NAME)
    ckpt, med_file = model_files(path)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    med = json.loads(med_file.read_text())
    try:
        model = build_model(state, med)
    except (KeyError, RuntimeError, ValueError) as e:
        raise RuntimeError(f"{NAME} reward: {ckpt} does not match the ImageReward layout: {e}") from e
    tok = load_tokenizer(tokenizer_source(path, tokenizer))
    vocab = model.text.config.vocab_size
    if len(tok) > vocab:
        raise ValueError(f"{NAME} reward: the tokenizer has {len(tok)} tokens, the text encoder only {vocab}")
    return model, tok


class ImageRewardScorer:
    """A reward: ImageReward's score on the paper's scale, ``(mlp(cls) - mean) / std``."""

    def __init__(self, model: ImageRewardModel, tokenizer, device: torch.device, dtype: torch.dtype,
                 batch_size: int = 32):
        self.model, self.tokenizer = model, tokenizer
        self.device, self.dtype, self.batch_size = device, dtype, batch_size
        self.image_size = int(model.vision.config.image_size)

    def __call__(self, prompts: Sequence[str], metadata: Sequence[Mapping], images: torch.Tensor) -> torch.Tensor:
        check_batch(prompts, metadata, images)
        return self.score(list(prompts), images)

    @torch.no_grad()
    def score(self, prompts: list[str], images: torch.Tensor) -> torch.Tensor:
        out = []
        for sl in batches(len(prompts), self.batch_size):
            tok = self.tokenizer(prompts[sl], padding="max_length", truncation=True, max_length=MAX_TOKENS,
                                 return_tensors="pt")
            pixels = preprocess(images[sl].to(self.device), self.image_size).to(self.dtype)
            raw = self.model(pixels, tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device))
            out.append(((raw.float() - MEAN) / STD).cpu())
        return torch.cat(out).to(torch.float32) if out else torch.zeros(0)


def _resident_model(path: str, tokenizer: str | None, device: torch.device, dtype: torch.dtype):
    def load_on_device():
        model, tok = load(path, tokenizer)
        model.vision.to(device, dtype)
        model.text.to(device, dtype)
        model.head.to(device, torch.float32)  # the head reads the [CLS] output in fp32, as score() does
        return model, tok

    return resident((NAME, path, tokenizer, str(device), str(dtype)), load_on_device)


def imagereward(path: str = DEFAULT_PATH, tokenizer: str | None = None, device: str = "auto", dtype: str = "fp32",
                batch_size: int = 32) -> ImageRewardScorer:
    """ImageReward from a folder holding ``ImageReward.pt`` + ``med_config.json`` or a hub id (THUDM/ImageReward);
    ``tokenizer``: a BERT tokenizer (default: the folder's own, else bert-base-uncased)."""
    path = check_source(path, NAME)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    model, tok = _resident_model(path, tokenizer, dev, dt)
    return ImageRewardScorer(model, tok, dev, dt, batch_size)


REWARDS = {
    NAME: RewardSpec(NAME, imagereward, "ImageReward", "ImageReward (BLIP ViT-L + BERT cross-attention + MLP "
                     "head), the THUDM checkpoint mapped onto transformers' BLIP classes",
                     scale="(raw - 0.16717) / 1.03334, ~0.8-1.6",
                     source="THUDM/ImageReward (BLIP mapped onto transformers)"),
}
