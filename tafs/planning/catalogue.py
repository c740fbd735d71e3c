"""Which shipped component configs (``tafs/planning/configs``) make up each hub model and each reward."""

from __future__ import annotations

from dataclasses import dataclass

SD3_TEXT = ("clip_l_text_projection", "clip_g_text_projection", "t5_xxl_encoder")
FLUX_TEXT = ("clip_l_text", "t5_xxl_encoder")


@dataclass(frozen=True)
class Generator:
    family: str  # sd3 | flux (activation and FLOP models) | sana | hidream (weights only)
    transformer: str
    vae: str
    text: tuple[str, ...]


GENERATORS: dict[str, Generator] = {
    "stabilityai/stable-diffusion-3.5-medium": Generator("sd3", "sd35_medium_transformer", "sd3_vae", SD3_TEXT),
    "stabilityai/stable-diffusion-3.5-large": Generator("sd3", "sd35_large_transformer", "sd3_vae", SD3_TEXT),
    "stabilityai/stable-diffusion-3.5-large-turbo": Generator("sd3", "sd35_large_transformer", "sd3_vae", SD3_TEXT),
    "black-forest-labs/FLUX.1-dev": Generator("flux", "flux_dev_transformer", "flux_vae", FLUX_TEXT),
    "black-forest-labs/FLUX.1-schnell": Generator("flux", "flux_schnell_transformer", "flux_vae", FLUX_TEXT),
    "Efficient-Large-Model/SANA1.5_1.6B_1024px_diffusers": Generator("sana", "sana_1600m_transformer", "dc_ae_f32c32",
                                                                     ("gemma2_2b",)),
    "Efficient-Large-Model/Sana_Sprint_1.6B_1024px_diffusers": Generator("sana", "sana_sprint_1600m_transformer",
                                                                         "dc_ae_f32c32", ("gemma2_2b",)),
    # HiDream-I1's pipeline folder has CLIP-L/G and T5-XXL; Llama-3.1-8B is loaded beside it (a `components:` entry)
    "HiDream-ai/HiDream-I1-Full": Generator("hidream", "hidream_i1_transformer", "flux_vae", SD3_TEXT + ("llama31_8b",)),
    "HiDream-ai/HiDream-I1-Fast": Generator("hidream", "hidream_i1_transformer", "flux_vae", SD3_TEXT + ("llama31_8b",)),
}

# The networks each reward loads (tafs/rewards): GenEval's detector and its colour classifier (CLIP ViT-L/14)
REWARDS: dict[str, tuple[str, ...]] = {
    "clip": ("clip_vit_l14",),
    "pickscore": ("pickscore_clip_h",),
    "hpsv2": ("hpsv2_vit_h14",),
    "imagereward": ("imagereward_blip_vision", "imagereward_blip_text"),
    "geneval": ("mask2former_swin_s", "clip_vit_l14"),
    "geneval_score": ("mask2former_swin_s", "clip_vit_l14"),
    "unifiedreward": ("qwen25_vl_7b",),
    "toy_dense": (),  # the toy world's scorer: a few MB
    "toy_correct": (),
}
REWARD_INPUT_TOKENS = 257 + 77  # a CLIP-style scorer: 16 x 16 patches + class token at 224 px, 77 text tokens


def generator(repo: str | None) -> Generator | None:
    return GENERATORS.get(repo or "")


def hub_repo(entry: object) -> str | None:
    """The hub repository of a config model entry ({hub: owner/name, ...}), None for a folder or a tiny model."""
    return entry.get("hub") if isinstance(entry, dict) else None
