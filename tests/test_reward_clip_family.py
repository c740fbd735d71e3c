"""The CLIP-family rewards (pickscore, clip, hpsv2) end to end on tiny random models in the real hub layouts.

Each reward is loaded through the registry from a folder its ``tafs.rewards.tiny`` builder wrote, scores a
batch, and is checked against the reference computation done directly with the model (the model card's
recipe: the transformers processor or open_clip's transform on PIL images). Images are smooth 512 px
patterns (gradients and low-frequency waves), stored at uint8 levels so PIL sees exactly the same pixels.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tafs.rewards import runtime
from tafs.rewards.clip_score import preprocess
from tafs.rewards.hpsv2 import CHECKPOINT, preprocess as hps_preprocess
from tafs.rewards.registry import available, build, spec
from tafs.rewards.tiny import clip as tiny_clip, hpsv2 as tiny_hps, pickscore as tiny_pick

PROMPTS = ["a red cube", "two blue rings", "a red cube", "a green cross left of a ring"]
META = [{}] * len(PROMPTS)
CLIP_MEAN, CLIP_STD = tiny_clip.CLIP_MEAN, tiny_clip.CLIP_STD
# One uint8 level in normalised units is 1 / 255 / min(std) = 0.0150: the torch preprocessing works on the
# floats, the references round their resized image to uint8. Measured max differences on the smooth images
# (512x512, 512x384, 320x512): transformers' CLIPImageProcessor 0.0148-0.0153 (its PIL backend: 0.0148-0.0152),
# open_clip's HPS transform 0.0147-0.0148. A crop or pad one pixel off shows up as > 0.1.
PIXEL_ATOL = 0.02
# What that rounding does to the tiny random models' scores, measured on the three sizes: PickScore (~35-60)
# up to 0.030, CLIP (100 x cosine, ~-40) 0.019, HPS (~0.2-0.4) 0.00023; the bounds are 2-4x that (a crop
# one pixel off moves PickScore by 0.1). Fed the torch path's own pixels, the references agree to float
# rounding (EXACT).
SCORE_ATOL = {"pickscore": 0.06, "clip": 0.05, "hpsv2": 1e-3}
EXACT = 1e-4


def smooth_images(n: int, h: int, w: int) -> torch.Tensor:
    """n smooth RGB patterns in [0, 1], quantised to uint8 levels."""
    y = torch.linspace(0, 1, h).view(h, 1)
    x = torch.linspace(0, 1, w).view(1, w)
    out = []
    for i in range(n):
        r = 0.5 + 0.4 * torch.sin(2 * math.pi * (x * (1 + i) + 0.3 * y))
        g = (0.7 * x + 0.3 * y) if i % 2 == 0 else 0.9 * (1 - y).expand(h, w)
        b = 0.5 + 0.45 * torch.cos(2 * math.pi * y * (i + 0.5) + x)
        out.append(torch.stack([r, g, b]))
    return (torch.stack(out).clamp(0, 1) * 255).round() / 255


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    arrays = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arrays]


def _features(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("rewards")
    return {"pickscore": tiny_pick.save_tiny(root / "pickscore", seed=1),
            "clip": tiny_clip.save_tiny(root / "clip", seed=2),
            "hpsv2": tiny_hps.save_tiny(root / "hpsv2", seed=3)}


@pytest.fixture(scope="module")
def images():
    return smooth_images(4, 512, 512)


def transformers_reference(folder, images: torch.Tensor, prompts: list[str],
                           torch_pixels: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(logit_scale.exp() x cosine, cosine) as PickScore's model card computes them, on PIL images (or on
    the torch preprocessing's pixels)."""
    from transformers import AutoModel, CLIPProcessor

    processor = CLIPProcessor.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        pix = (preprocess(images, processor.image_processor) if torch_pixels else
               processor(images=to_pil(images), return_tensors="pt")["pixel_values"])
        text = processor(text=prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        img = torch.nn.functional.normalize(_features(model.get_image_features(pixel_values=pix)), dim=-1)
        txt = torch.nn.functional.normalize(_features(model.get_text_features(**text)), dim=-1)
        cos = (img * txt).sum(-1)
        return model.logit_scale.exp() * cos, cos


def hps_transform():
    import open_clip

    return open_clip.image_transform(224, is_train=False, mean=CLIP_MEAN, std=CLIP_STD, resize_mode="longest",
                                     interpolation="bicubic", fill_color=0)


def hps_reference(folder, images: torch.Tensor, prompts: list[str], torch_pixels: bool = False) -> torch.Tensor:
    """HPSv2's computation: open_clip model + checkpoint state dict, its PIL transform (or the torch
    preprocessing's pixels), normalised features."""
    import open_clip

    model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    model.load_state_dict(torch.load(folder / CHECKPOINT, weights_only=True)["state_dict"])
    model.eval()
    transform = hps_transform()
    with torch.no_grad():
        pix = (hps_preprocess(images, 224, CLIP_MEAN, CLIP_STD) if torch_pixels else
               torch.stack([transform(p) for p in to_pil(images)]))
        img = model.encode_image(pix, normalize=True)
        txt = model.encode_text(open_clip.get_tokenizer(f"local-dir:{folder}")(prompts), normalize=True)
    return (img * txt).sum(-1)


def test_specs_are_registered_with_scale_and_source():
    for name, label in (("pickscore", "PickScore"), ("clip", "CLIP score"), ("hpsv2", "HPSv2.1")):
        s = spec(name)
        assert name in available() and s.label == label and s.scale and s.source


def test_pickscore_matches_the_model_card_computation(folders, images):
    reward = build("pickscore", path=str(folders["pickscore"]), batch_size=3)  # two image chunks
    scores = reward(PROMPTS, META, images)
    assert scores.shape == (4,) and scores.dtype == torch.float32 and scores.device.type == "cpu"
    expected, _ = transformers_reference(folders["pickscore"], images, PROMPTS)
    torch.testing.assert_close(scores, expected, atol=SCORE_ATOL["pickscore"], rtol=0)
    exact, _ = transformers_reference(folders["pickscore"], images, PROMPTS, torch_pixels=True)
    torch.testing.assert_close(scores, exact, atol=0, rtol=EXACT)
    assert abs(reward.factor - 100.0) < 1e-3  # the tiny model's logit scale is ln 100, like the real one
    assert scores[0] != scores[2]  # same prompt, different images


def test_clip_is_100_x_cosine_by_default_and_scale_applies(folders, images):
    folder = str(folders["clip"])
    scores = build("clip", path=folder)(PROMPTS, META, images)
    _, cosine = transformers_reference(folders["clip"], images, PROMPTS)
    torch.testing.assert_close(scores, 100 * cosine, atol=SCORE_ATOL["clip"], rtol=0)
    _, exact = transformers_reference(folders["clip"], images, PROMPTS, torch_pixels=True)
    torch.testing.assert_close(scores, 100 * exact, atol=0, rtol=EXACT)
    plain = build("clip", path=folder, scale=1.0)
    torch.testing.assert_close(plain(PROMPTS, META, images) * 100, scores, atol=1e-4, rtol=0)
    torch.testing.assert_close(plain.score(PROMPTS, images), plain.scorer.score(PROMPTS, images), atol=0, rtol=0)


def test_pickscore_scale_divides(folders, images):
    folder = str(folders["pickscore"])
    raw = build("pickscore", path=folder)(PROMPTS, META, images)
    torch.testing.assert_close(build("pickscore", path=folder, scale=26)(PROMPTS, META, images), raw / 26,
                               atol=1e-5, rtol=0)


def test_hpsv2_matches_open_clip_reference(folders, images):
    reward = build("hpsv2", path=str(folders["hpsv2"]), batch_size=3)
    scores = reward(PROMPTS, META, images)
    assert scores.shape == (4,) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, hps_reference(folders["hpsv2"], images, PROMPTS),
                               atol=SCORE_ATOL["hpsv2"], rtol=0)
    torch.testing.assert_close(scores, hps_reference(folders["hpsv2"], images, PROMPTS, torch_pixels=True),
                               atol=0, rtol=EXACT)
    wide = smooth_images(4, 320, 512)  # padded top and bottom
    torch.testing.assert_close(reward(PROMPTS, META, wide), hps_reference(folders["hpsv2"], wide, PROMPTS),
                               atol=SCORE_ATOL["hpsv2"], rtol=0)


@pytest.mark.parametrize("size", [(512, 512), (512, 384), (320, 512)])
def test_preprocessing_matches_the_reference_transforms(folders, size):
    """Max |torch - reference| in normalised units, measured 0.0147-0.0153 (one uint8 level is 0.0150): the
    references resize PIL/uint8 images and round the result, the torch path stays in floats."""
    from transformers import CLIPImageProcessor

    images = smooth_images(4, *size)
    processor = CLIPImageProcessor.from_pretrained(folders["pickscore"])
    ref = processor(images=to_pil(images), return_tensors="pt")["pixel_values"]
    ours = preprocess(images, processor)
    assert ours.shape == ref.shape == (4, 3, 224, 224)
    assert (ours - ref).abs().max() < PIXEL_ATOL
    transform = hps_transform()
    ref = torch.stack([transform(p) for p in to_pil(images)])
    ours = hps_preprocess(images, 224, CLIP_MEAN, CLIP_STD)
    assert ours.shape == ref.shape == (4, 3, 224, 224)
    assert (ours - ref).abs().max() < PIXEL_ATOL


def test_a_group_of_one_prompt_encodes_the_text_once(folders, images):
    for name in ("pickscore", "hpsv2"):
        reward = build(name, path=str(folders[name]))
        group = reward(["a red cube"] * 4, META, images)
        cache = (reward.scorer if hasattr(reward, "scorer") else reward)._text_cache
        assert list(cache) == ["a red cube"]
        torch.testing.assert_close(reward(["a red cube"], META[:1], images[1:2]), group[1:2], atol=1e-5, rtol=0)


def test_models_are_loaded_once_per_process(folders):
    a = build("clip", path=str(folders["clip"]), batch_size=2)
    b = build("clip", path=str(folders["clip"]) + "/", device="cpu", dtype="bf16")  # bf16 -> fp32 on the CPU
    assert a.scorer.model is b.scorer.model and a.scorer.batch_size == 2
    assert build("hpsv2", path=str(folders["hpsv2"])).model is build("hpsv2", path=str(folders["hpsv2"])).model


@pytest.mark.parametrize("name", ["pickscore", "clip", "hpsv2"])
def test_missing_model_files_name_the_reward_and_path(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=f"{name}.*no_such_folder"):
        build(name, path=str(tmp_path / "no_such_folder"))
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    with pytest.raises(OSError, match=f"{name}.*empty_folder"):
        build(name, path=str(empty))


def test_hps_checkpoint_formats_and_named_architecture(folders, images, tmp_path):
    """A bare state dict with DDP's ``module.`` prefixes loads too, and a folder holding only the checkpoint
    (the real ``xswu/HPSv2`` layout) is built from the named open_clip architecture."""
    import open_clip

    expected = build("hpsv2", path=str(folders["hpsv2"]))(PROMPTS, META, images)
    sd = torch.load(folders["hpsv2"] / CHECKPOINT, weights_only=True)["state_dict"]
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "open_clip_config.json").write_text((folders["hpsv2"] / "open_clip_config.json").read_text())
    torch.save({f"module.{k}": v for k, v in sd.items()}, bare / CHECKPOINT)
    torch.testing.assert_close(build("hpsv2", path=str(bare))(PROMPTS, META, images), expected, atol=1e-6, rtol=0)

    wider = {**tiny_hps.MODEL_CFG, "embed_dim": 24}
    for arch, cfg in (("tafs-tiny-hps", tiny_hps.MODEL_CFG), ("tafs-tiny-hps-24", wider)):
        (tmp_path / f"{arch}.json").write_text(json.dumps(cfg))  # registers the architecture with open_clip
        open_clip.add_model_config(tmp_path / f"{arch}.json")
    only_ckpt = tmp_path / "hub_layout"
    only_ckpt.mkdir()
    torch.save({"state_dict": sd}, only_ckpt / "weights.pt")
    reward = build("hpsv2", path=str(only_ckpt), checkpoint="weights.pt", arch="tafs-tiny-hps")
    torch.testing.assert_close(reward(PROMPTS, META, images), expected, atol=1e-6, rtol=0)
    with pytest.raises(OSError, match="does not fit"):
        build("hpsv2", path=str(only_ckpt), checkpoint="weights.pt", arch="tafs-tiny-hps-24")
    (only_ckpt / "truncated.pt").write_bytes((only_ckpt / "weights.pt").read_bytes()[:1000])
    with pytest.raises(OSError, match="cannot read the checkpoint .*truncated.pt"):
        build("hpsv2", path=str(only_ckpt), checkpoint="truncated.pt", arch="tafs-tiny-hps")


def test_hps_without_open_clip_names_the_package(folders, monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # import open_clip -> ImportError
    with pytest.raises(runtime.MissingDependency, match="open_clip_torch"):
        build("hpsv2", path=str(folders["hpsv2"]))


def test_mismatched_inputs_raise(folders, images):
    for name in ("pickscore", "clip", "hpsv2"):
        with pytest.raises(ValueError, match="one of each per sample"):
            build(name, path=str(folders[name]))(PROMPTS[:3], META[:3], images)
