"""The ImageReward reward on a tiny random checkpoint in the real hub layout (ImageReward.pt + med_config.json).

What is checked without the ``image-reward`` package (bench/imagereward_reference_check.py compares with it):
the score equals the model assembled by hand from the loaded transformers modules and a functional forward of
BLIP's ViT and med BERT written from the ORIGINAL checkpoint names (so a swap of two same-shaped tensors in the
mapping, e.g. norm1/norm2 or query/key, cannot pass); the mapping round-trips exactly; the torch preprocessing
matches ImageReward's torchvision transform on PIL images; missing or foreign files fail with clear errors.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tafs.rewards import imagereward as irw
from tafs.rewards.registry import build
from tafs.rewards.tiny.imagereward import MED, save_tiny

PROMPTS = ["a photo of a cat", "a red car on the left of two blue houses", "a painting of a dog", ""]
# Measured max |ours - torchvision| on the normalised pixels of the smooth images below: 0.0141 (about one 8-bit
# level divided by CLIP's std; PIL rounds to 8 bits, we do not). Textured images measure up to 0.0155.
PREPROCESS_BOUND = 0.02


def smooth_images(n: int = 4, h: int = 512, w: int = 512) -> torch.Tensor:
    """Smooth gradients with a sine, quantised to 8 bits so PIL and torch get the same values."""
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    imgs = [torch.stack([x * (i + 1) / n, y, 0.5 + 0.5 * torch.sin(6.28 * (x + y) * (i + 1))]) for i in range(n)]
    return (torch.stack(imgs) * 255).round() / 255


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("imagereward") / "model")


@pytest.fixture(scope="module")
def reward(folder):
    return build("imagereward", path=str(folder), device="cpu")


@pytest.fixture(scope="module")
def original(folder):
    return torch.load(folder / "ImageReward.pt", weights_only=True)


def test_scores_equal_hand_assembled_model(reward):
    images = smooth_images()
    scores = reward(PROMPTS, [{}] * 4, images)
    assert scores.shape == (4,) and scores.dtype == torch.float32 and scores.device.type == "cpu"
    assert torch.isfinite(scores).all() and scores.std() > 1e-3

    m = reward.model
    tok = reward.tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    with torch.no_grad():
        image_embeds = m.vision(pixel_values=irw.preprocess(images, 224)).last_hidden_state
        text = m.text(input_ids=tok.input_ids, attention_mask=tok.attention_mask,
                      encoder_hidden_states=image_embeds,
                      encoder_attention_mask=torch.ones(image_embeds.shape[:2], dtype=torch.long))
        raw = m.head(text.last_hidden_state[:, 0, :]).squeeze(-1)
    torch.testing.assert_close(scores, (raw - 0.16717362830052426) / 1.0333394966054072, atol=1e-6, rtol=0)


# ---- BLIP's forward written from the original checkpoint names (vit.py, med.py, ImageReward.py) ----

def _lin(x, sd, p):
    return F.linear(x, sd[p + "weight"], sd[p + "bias"])


def _ln(x, sd, p, eps):
    return F.layer_norm(x, x.shape[-1:], sd[p + "weight"], sd[p + "bias"], eps)


def _attend(q, k, v, heads, mask=None):
    b, n, c = q.shape
    q, k, v = (t.reshape(b, -1, heads, c // heads).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(c // heads)
    if mask is not None:  # med.py's extended mask
        scores = scores + (1.0 - mask[:, None, None, :].float()) * -10000.0
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)


def blip_vit(sd, x, depth, heads):
    p = "blip.visual_encoder."
    x = F.conv2d(x, sd[p + "patch_embed.proj.weight"], sd[p + "patch_embed.proj.bias"], stride=16)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd[p + "cls_token"].expand(len(x), -1, -1), x], 1) + sd[p + "pos_embed"]
    for i in range(depth):
        b = f"{p}blocks.{i}."
        q, k, v = _lin(_ln(x, sd, b + "norm1.", 1e-6), sd, b + "attn.qkv.").chunk(3, dim=-1)
        x = x + _lin(_attend(q, k, v, heads), sd, b + "attn.proj.")
        x = x + _lin(F.gelu(_lin(_ln(x, sd, b + "norm2.", 1e-6), sd, b + "mlp.fc1.")), sd, b + "mlp.fc2.")
    return _ln(x, sd, p + "norm.", 1e-6)


def med_bert(sd, ids, mask, image_embeds):
    p, eps, heads = "blip.text_encoder.", MED["layer_norm_eps"], MED["num_attention_heads"]
    x = sd[p + "embeddings.word_embeddings.weight"][ids] + sd[p + "embeddings.position_embeddings.weight"][
        :ids.shape[1]]
    x = _ln(x, sd, p + "embeddings.LayerNorm.", eps)
    for i in range(MED["num_hidden_layers"]):
        b = f"{p}encoder.layer.{i}."
        for part, kv, kv_mask in (("attention.", None, mask), ("crossattention.", image_embeds, None)):
            kv = x if kv is None else kv
            s = b + part + "self."
            ctx = _attend(_lin(x, sd, s + "query."), _lin(kv, sd, s + "key."), _lin(kv, sd, s + "value."), heads,
                          kv_mask)
            x = _ln(_lin(ctx, sd, b + part + "output.dense.") + x, sd, b + part + "output.LayerNorm.", eps)
        h = F.gelu(_lin(x, sd, b + "intermediate.dense."))
        x = _ln(_lin(h, sd, b + "output.dense.") + x, sd, b + "output.LayerNorm.", eps)
    return x


def test_scores_equal_original_forward(reward, original):
    images = smooth_images()
    tok = reward.tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    width = original["blip.visual_encoder.pos_embed"].shape[-1]
    embeds = blip_vit(original, irw.preprocess(images, 224), depth=2, heads=width // 64)
    x = med_bert(original, tok.input_ids, tok.attention_mask, embeds)[:, 0]
    for i in (0, 2, 4, 6, 7):  # MLP.layers: Linears without activations, Dropouts between
        x = _lin(x, original, f"mlp.layers.{i}.")
    expected = (x.squeeze(-1) - 0.16717362830052426) / 1.0333394966054072
    torch.testing.assert_close(reward(PROMPTS, [{}] * 4, images), expected, atol=1e-5, rtol=0)


def test_mapping_round_trips(reward, original):
    mapped = irw.to_original(reward.model)
    assert set(mapped) == {k for k in original if not k.startswith(irw.IGNORED)}
    for key, value in mapped.items():
        assert torch.equal(value, original[key]), key
    ignored = sorted(k for k in original if k.startswith(irw.IGNORED))
    assert ignored == ["blip.text_encoder.embeddings.position_ids", "blip.text_proj.bias", "blip.text_proj.weight",
                       "blip.vision_proj.bias", "blip.vision_proj.weight"]


def test_vision_key_mapping_examples():
    assert irw.vision_key("blocks.3.attn.qkv.weight") == "encoder.layers.3.self_attn.qkv.weight"
    assert irw.vision_key("blocks.23.attn.proj.bias") == "encoder.layers.23.self_attn.projection.bias"
    assert irw.vision_key("norm.weight") == "post_layernorm.weight"
    assert irw.vision_key("pos_embed") == "embeddings.position_embedding"
    assert irw.original_vision_key("encoder.layers.0.layer_norm2.bias") == "blocks.0.norm2.bias"
    assert irw.vision_key("head.weight") is None


def test_tokenizer_is_blips(reward):
    tok = reward.tokenizer
    n = len(tok)
    assert tok.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [n - 2, n - 1]
    ids = tok(["a cat"], padding="max_length", truncation=True, max_length=35).input_ids[0]
    assert len(ids) == 35 and ids[0] == tok.cls_token_id and ids[3] == tok.sep_token_id and ids[4:] == [0] * 31


def test_batching_and_resident_model(folder, reward):
    small = build("imagereward", path=str(folder), device="cpu", batch_size=3)
    assert small.model is reward.model  # loaded once per process
    images = smooth_images()
    torch.testing.assert_close(small(PROMPTS, [{}] * 4, images), reward(PROMPTS, [{}] * 4, images),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [(512, 512), (512, 768), (640, 512)])
def test_preprocessing_matches_torchvision_on_pil(size):
    from PIL import Image
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

    transform = Compose([Resize(224, interpolation=InterpolationMode.BICUBIC), CenterCrop(224), ToTensor(),
                         Normalize(irw.CLIP_MEAN, irw.CLIP_STD)])
    images = smooth_images(2, *size)
    pils = [Image.fromarray((im * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()) for im in images]
    expected = torch.stack([transform(p) for p in pils])
    ours = irw.preprocess(images, 224)
    assert ours.shape == expected.shape == (2, 3, 224, 224)
    assert (ours - expected).abs().max() < PREPROCESS_BOUND


@pytest.mark.parametrize("missing", ["ImageReward.pt", "med_config.json"])
def test_missing_file_is_named(folder, tmp_path, missing):
    broken = shutil.copytree(folder, tmp_path / "broken")
    (broken / missing).unlink()
    with pytest.raises(FileNotFoundError, match=rf"imagereward reward: .*broken.* has no {missing}"):
        build("imagereward", path=str(broken), device="cpu")


def test_no_such_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="imagereward reward"):
        build("imagereward", path=str(tmp_path / "nowhere"), device="cpu")


def test_foreign_key_rejected(folder, tmp_path, original):
    broken = shutil.copytree(folder, tmp_path / "foreign")
    torch.save({**original, "blip.itm_head.weight": torch.zeros(2, 32)}, broken / "ImageReward.pt")
    with pytest.raises(RuntimeError, match="blip.itm_head.weight"):
        build("imagereward", path=str(broken), device="cpu")


def test_wrong_shape_rejected(folder, tmp_path, original):
    broken = shutil.copytree(folder, tmp_path / "shape")
    key = "blip.text_encoder.encoder.layer.0.crossattention.self.key.weight"
    torch.save({**original, key: torch.zeros(32, 64)}, broken / "ImageReward.pt")
    with pytest.raises(RuntimeError, match="does not match the ImageReward layout"):
        build("imagereward", path=str(broken), device="cpu")


def test_spec_is_listed():
    from tafs.rewards.registry import spec

    s = spec("imagereward")
    assert s.label == "ImageReward" and "1.03334" in s.scale and "THUDM/ImageReward" in s.source
    assert np.isclose(irw.MEAN, 0.16717, atol=1e-5) and np.isclose(irw.STD, 1.03334, atol=1e-5)
