"""The toy backbone: a tiny pixel-space ``SD3Transformer2DModel`` + a tiny ``CLIPTextModel``.

Same classes as SD3.5, saved in the hub's folder layout (transformer/, text_encoder/, tokenizer/,
model_index.json) and loaded with ``from_pretrained``, so the real loading path is exercised.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from tafs.models.backbone import Backbone, Cond
from tafs.models.options import ModelOptions

MODEL_INDEX = {
    "_class_name": "TafsToyPipeline",
    "transformer": ["diffusers", "SD3Transformer2DModel"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
}


@dataclass(frozen=True)
class ToyModelConfig:
    image_size: int = 32
    channels: int = 3
    patch_size: int = 8
    layers: int = 6
    heads: int = 4
    head_dim: int = 32
    text_dim: int = 64
    text_layers: int = 2
    text_heads: int = 2
    max_tokens: int = 12
    # "x0": the transformer predicts the clean image and v = (x - x0_hat) / sigma. With patch 8 a
    # token carries 192 pixel values, more than the hidden width: a v-predicting model cannot pass
    # the noise through and leaves grain everywhere, an x0-predicting one need not (cf. JiT, 2025).
    prediction: str = "x0"


def build_tokenizer(vocab_words: list[str], max_tokens: int):
    """A word-level fast tokenizer (bos/eos added, padded to ``max_tokens``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    vocab = {w: i for i, w in enumerate(specials + list(vocab_words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<bos>", eos_token="<eos>", model_max_length=max_tokens)


def build_toy(cfg: ToyModelConfig, vocab_words: list[str], seed: int = 0) -> "ToyBackbone":
    from diffusers import SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(vocab_words, cfg.max_tokens)
    text_cfg = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.text_dim, intermediate_size=4 * cfg.text_dim,
        num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_tokens, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    text_encoder = CLIPTextModel(text_cfg)
    transformer = SD3Transformer2DModel(
        sample_size=cfg.image_size, patch_size=cfg.patch_size, in_channels=cfg.channels,
        out_channels=cfg.channels, num_layers=cfg.layers, attention_head_dim=cfg.head_dim,
        num_attention_heads=cfg.heads, joint_attention_dim=cfg.text_dim,
        caption_projection_dim=cfg.heads * cfg.head_dim, pooled_projection_dim=cfg.text_dim,
        pos_embed_max_size=cfg.image_size // cfg.patch_size)
    return ToyBackbone(transformer, text_encoder, tokenizer, cfg)


class ToyBackbone(Backbone):
    """The toy model has no pipeline of its own: its Euler ODE grid (``scheduler_sigmas``) is the base class's,
    diffusers' ``FlowMatchEulerDiscreteScheduler`` rule at shift 1 (``default_shift``): linspace(1, 0.001, nfe),
    then 0."""

    def __init__(self, transformer, text_encoder, tokenizer, cfg: ToyModelConfig):
        self.transformer = transformer
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.device = torch.device("cpu")

    def to(self, device: torch.device | str) -> "ToyBackbone":
        self.device = torch.device(device)
        self.transformer.to(self.device)
        self.text_encoder.to(self.device)
        return self

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.cfg.channels, self.cfg.image_size, self.cfg.image_size)

    def denoiser(self) -> torch.nn.Module:
        return self.transformer

    def set_denoiser(self, module: torch.nn.Module) -> None:
        self.transformer = module

    def frozen_modules(self) -> list[torch.nn.Module]:
        return [self.text_encoder]

    def tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        t = self.tokenizer(prompts, padding="max_length", max_length=self.cfg.max_tokens, truncation=True,
                           return_tensors="pt")
        return {"input_ids": t["input_ids"].to(self.device), "attention_mask": t["attention_mask"].to(self.device)}

    def encode(self, prompts: list[str]) -> Cond:
        tok = self.tokenize(prompts)
        hidden = self.text_encoder(**tok).last_hidden_state
        # Pool the EOS position ourselves (CLIP's own pooler is unreliable for custom vocabularies).
        eos = tok["attention_mask"].sum(1) - 1
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), eos]
        return Cond(hidden, pooled)

    def _forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        t = sigma.to(x.dtype).expand(x.shape[0]) * 1000.0  # SD3 takes timesteps in [0, 1000]
        return self.transformer(hidden_states=x, encoder_hidden_states=cond.hidden,
                                pooled_projections=cond.pooled, timestep=t, return_dict=False)[0]

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        out = self._forward(x, sigma, cond)
        if self.cfg.prediction == "velocity":
            return out
        s = sigma.to(x.dtype).expand(x.shape[0]).reshape(-1, *([1] * (x.ndim - 1)))
        return (x - out) / s

    def predict_x0(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        if self.cfg.prediction == "velocity":
            return super().predict_x0(x, sigma, cond)
        return self._forward(x, sigma, cond)

    def decode_batch(self, x0: torch.Tensor) -> torch.Tensor:
        return ((x0 + 1) / 2).clamp(0, 1)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the flow's space [-1, 1] (pixel space: no VAE)."""
        return images * 2 - 1

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(path / "transformer")
        self.text_encoder.save_pretrained(path / "text_encoder")
        self.tokenizer.save_pretrained(path / "tokenizer")
        (path / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2) + "\n")
        (path / "tafs_toy.json").write_text(json.dumps(asdict(self.cfg), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu",
             options: ModelOptions | None = None) -> "ToyBackbone":
        """The toy runs in fp32 pixel space at its own size; of ``options`` only a matching resolution applies."""
        from diffusers import SD3Transformer2DModel
        from transformers import CLIPTextModel, PreTrainedTokenizerFast

        path = Path(path)
        if not (path / "tafs_toy.json").exists():
            raise FileNotFoundError(f"{path} is not a toy model folder (no tafs_toy.json); "
                                    "build one with `python -m tafs pretrain`")
        cfg = ToyModelConfig(**json.loads((path / "tafs_toy.json").read_text()))
        if options is not None and options.resolution not in (None, cfg.image_size):
            raise ValueError(f"model.resolution {options.resolution}: the toy model at {path} is {cfg.image_size} px")
        transformer = SD3Transformer2DModel.from_pretrained(path / "transformer")
        text_encoder = CLIPTextModel.from_pretrained(path / "text_encoder")
        tokenizer = PreTrainedTokenizerFast.from_pretrained(path / "tokenizer")
        return cls(transformer, text_encoder, tokenizer, cfg).to(device)
