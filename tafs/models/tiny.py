"""Tiny random pipelines of the real classes (``StableDiffusion3Pipeline``, ``FluxPipeline``), saved in the hub layout.

Weights cannot be downloaded where this project is built and tested, so the real loading and training path
runs on these: every component is the class the real model uses (CLIP text encoders with projection, T5,
an ``AutoencoderKL``, the MMDiT / Flux transformer, ``FlowMatchEulerDiscreteScheduler``), with a handful of
parameters. Tokenisers are built from a character vocabulary (no hub). At 32 px the images are the toy
world's size, so the toy task's rewards run on them. ``python -m tafs tiny-pipeline --family sd3 --out DIR``.
"""

from __future__ import annotations

import argparse
import json
import string
import tempfile
from pathlib import Path

import torch

FAMILIES = ("sd3", "flux")
_CHARS = string.ascii_lowercase + string.digits + ".,'-"


def clip_tokenizer(model_max_length: int = 77):
    """A character-level ``CLIPTokenizer`` (every character with and without the end-of-word mark)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in _CHARS:
        for token in (c, c + "</w>"):
            vocab.setdefault(token, len(vocab))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"),
                             model_max_length=model_max_length)


def t5_tokenizer():
    """A character-level ``T5TokenizerFast`` (a Unigram model with a Metaspace pre-tokenizer, ``</s>`` appended)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(c, -1.0) for c in "▁" + _CHARS]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0)


def _clip_config(vocab: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=vocab, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=77, projection_dim=32, bos_token_id=0,
                          eos_token_id=1, pad_token_id=1)


def _t5(vocab: int):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))


def _vae(image_size: int, scaling: float, shift: float):
    """A 2-level VAE (scale factor 2) with 4 latent channels."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(sample_size=image_size, in_channels=3, out_channels=3, block_out_channels=(4, 8),
                         layers_per_block=1, latent_channels=4, norm_num_groups=1,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         shift_factor=shift, scaling_factor=scaling, use_quant_conv=False, use_post_quant_conv=False)


def tiny_sd3(image_size: int = 32):
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    tok, t5tok = clip_tokenizer(), t5_tokenizer()
    latent = image_size // 2
    transformer = SD3Transformer2DModel(
        sample_size=latent, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
        num_attention_heads=4, joint_attention_dim=32, caption_projection_dim=32, pooled_projection_dim=64,
        pos_embed_max_size=latent // 2)
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(image_size, 1.5305, 0.0609), text_encoder=CLIPTextModelWithProjection(_clip_config(len(tok))),
        tokenizer=tok, text_encoder_2=CLIPTextModelWithProjection(_clip_config(len(tok))), tokenizer_2=tok,
        text_encoder_3=_t5(len(t5tok)), tokenizer_3=t5tok)


def tiny_flux(image_size: int = 32, guidance_embeds: bool = True):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    tok, t5tok = clip_tokenizer(), t5_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 6, 6))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    return FluxPipeline(transformer=transformer, scheduler=scheduler, vae=_vae(image_size, 0.3611, 0.1159),
                        text_encoder=CLIPTextModel(_clip_config(len(tok))), tokenizer=tok,
                        text_encoder_2=_t5(len(t5tok)), tokenizer_2=t5tok)


def build_tiny_pipeline(family: str, out: str | Path, seed: int = 0, image_size: int = 32) -> Path:
    """Build and save a tiny random pipeline of ``family`` (sd3 | flux) at ``out``; returns the folder."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    torch.manual_seed(seed)
    pipe = tiny_sd3(image_size) if family == "sd3" else tiny_flux(image_size)
    from tafs.io import atomic_dir

    with atomic_dir(out) as tmp:
        pipe.save_pretrained(tmp)
    return Path(out)


def build_tiny_lora(pipeline_dir: str | Path, out: str | Path, rank: int = 4, scale: float = 0.05,
                    seed: int = 0) -> Path:
    """A random LoRA on a tiny pipeline's transformer, in diffusers' format (``pytorch_lora_weights.safetensors``):
    the stand-in for a LoRA baseline such as Hyper-Flux."""
    from diffusers import DiffusionPipeline
    from peft import get_peft_model_state_dict

    from tafs.models.lora import ATTENTION_TARGETS, LoraSpec, attach_lora

    pipe = DiffusionPipeline.from_pretrained(str(pipeline_dir))
    model = attach_lora(pipe.transformer, LoraSpec(rank=rank, alpha=rank, target_modules=ATTENTION_TARGETS), seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(scale * torch.randn(p.shape, generator=g))
    layers = {k.removeprefix("base_model.model."): v for k, v in get_peft_model_state_dict(model).items()}
    type(pipe).save_lora_weights(str(out), transformer_lora_layers=layers)
    return Path(out)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="tafs tiny-pipeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--family", choices=FAMILIES, required=True)
    p.add_argument("--out", required=True, help="folder to write (hub layout)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--lora-out", default=None, help="also write a random diffusers-format LoRA for it here")
    a = p.parse_args(argv)
    out = build_tiny_pipeline(a.family, a.out, a.seed, a.image_size)
    if a.lora_out:
        build_tiny_lora(out, a.lora_out, seed=a.seed)
    return out
