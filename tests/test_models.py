"""Toy backbone save/load through the hub layout, and LoRA attach/disable/save/load."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch

from tafs.models.backbone import LoraSpec
from tafs.models.loading import load_backbone
from tafs.models.toy import MODEL_INDEX, ToyBackbone

from conftest import TINY, build_tiny

PROMPTS = ["a red square left of a blue ring", "three crosses"]


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 32, 32, generator=g)
    sigma = torch.tensor([0.3, 0.8])
    return x, sigma


@torch.no_grad()
def _velocity(backbone, seed: int = 0):
    x, sigma = _inputs(seed)
    return backbone.velocity(x, sigma, backbone.encode(PROMPTS))


def _randomise_lora_b(backbone, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    n = 0
    with torch.no_grad():
        for name, p in backbone.denoiser().named_parameters():
            if "lora_B" in name:
                assert torch.count_nonzero(p) == 0  # peft's default init: B = 0
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
                n += 1
    assert n > 0


# -- toy backbone ------------------------------------------------------------------------------------

def test_velocity_shape_and_latent_shape(tiny_backbone):
    assert tiny_backbone.latent_shape == (3, 32, 32)
    v = _velocity(tiny_backbone)
    assert v.shape == (2, 3, 32, 32)
    assert torch.isfinite(v).all()
    # depends on the prompt and on sigma
    x, sigma = _inputs()
    with torch.no_grad():
        c = tiny_backbone.encode(PROMPTS)
        c_swapped = tiny_backbone.encode(PROMPTS[::-1])
        assert not torch.allclose(tiny_backbone.velocity(x, sigma, c_swapped), v)
        assert not torch.allclose(tiny_backbone.velocity(x, sigma.flip(0), c), v)


def test_encode_pools_eos_token(tiny_backbone):
    with torch.no_grad():
        cond = tiny_backbone.encode(PROMPTS)
    tok = tiny_backbone.tokenize(PROMPTS)
    eos_id = tiny_backbone.tokenizer.eos_token_id
    assert cond.hidden.shape == (2, tiny_backbone.cfg.max_tokens, TINY["text_dim"])
    assert cond.pooled.shape == (2, TINY["text_dim"])
    for i in range(2):
        ids = tok["input_ids"][i].tolist()
        pos = ids.index(eos_id)
        assert ids[0] == tiny_backbone.tokenizer.bos_token_id
        assert torch.equal(cond.pooled[i], cond.hidden[i, pos])


def test_save_load_identical(tmp_path):
    original = build_tiny(seed=3)
    path = tmp_path / "model"
    original.save(path)

    loaded = load_backbone(path, device="cpu")
    assert isinstance(loaded, ToyBackbone)
    assert loaded.device == torch.device("cpu")
    direct = ToyBackbone.load(path)
    assert loaded.cfg == original.cfg == direct.cfg

    v0 = _velocity(original)
    assert torch.equal(_velocity(loaded), v0)
    assert torch.equal(_velocity(direct), v0)
    with torch.no_grad():
        c0, c1 = original.encode(PROMPTS), loaded.encode(PROMPTS)
    assert torch.equal(c0.hidden, c1.hidden) and torch.equal(c0.pooled, c1.pooled)
    # a differently seeded model really is different (the equality above is not vacuous)
    assert not torch.allclose(_velocity(build_tiny(seed=4)), v0)


def test_tokenizer_round_trip(tiny_backbone, tmp_path):
    tiny_backbone.save(tmp_path / "m")
    loaded = ToyBackbone.load(tmp_path / "m")
    prompts = PROMPTS + ["two squares", "a yellow triangle below a green cross"]
    a, b = tiny_backbone.tokenize(prompts), loaded.tokenize(prompts)
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.equal(a["attention_mask"], b["attention_mask"])
    assert a["input_ids"].shape == (len(prompts), tiny_backbone.cfg.max_tokens)
    for i, p in enumerate(prompts):
        assert loaded.tokenizer.decode(b["input_ids"][i], skip_special_tokens=True) == p
        # bos + one token per word + eos
        assert int(b["attention_mask"][i].sum()) == len(p.split()) + 2
    unk = loaded.tokenize(["a purple square"])["input_ids"][0].tolist()
    assert loaded.tokenizer.unk_token_id in unk


def test_model_index(tiny_model_dir):
    index = json.loads((tiny_model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "TafsToyPipeline"
    assert index["transformer"] == ["diffusers", "SD3Transformer2DModel"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["tokenizer"][0] == "transformers"
    assert index == MODEL_INDEX
    for sub in ("transformer", "text_encoder", "tokenizer"):
        assert (tiny_model_dir / sub).is_dir()
    assert json.loads((tiny_model_dir / "transformer" / "config.json").read_text())["_class_name"] == \
        "SD3Transformer2DModel"
    from tafs.models.toy import ToyModelConfig

    assert json.loads((tiny_model_dir / "tafs_toy.json").read_text()) == asdict(ToyModelConfig(**TINY))


def test_load_backbone_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_backbone(tmp_path, device="cpu")
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "SomethingElse"}))
    with pytest.raises(ValueError):
        load_backbone(tmp_path, device="cpu")


def test_velocity_cfg(tiny_backbone):
    x, sigma = _inputs()
    with torch.no_grad():
        cond = tiny_backbone.encode(PROMPTS)
        null = tiny_backbone.encode([""])
        v_c = tiny_backbone.velocity(x, sigma, cond)
        v_u = tiny_backbone.velocity(x, sigma, tiny_backbone.encode(["", ""]))
        assert torch.equal(tiny_backbone.velocity_cfg(x, sigma, cond, null, 1.0), v_c)
        assert torch.equal(tiny_backbone.velocity_cfg(x, sigma, cond, None, 4.0), v_c)
        guided = tiny_backbone.velocity_cfg(x, sigma, cond, null, 4.0)
    torch.testing.assert_close(guided, v_u + 4.0 * (v_c - v_u), rtol=1e-4, atol=1e-4)


# -- LoRA ----------------------------------------------------------------------------------------------

def test_lora_changes_velocity_and_disable_restores_base(tiny_backbone):
    base_v = _velocity(tiny_backbone)
    tiny_backbone.add_lora(LoraSpec(rank=4, alpha=8), seed=0)
    # B = 0 at init: the adapted model starts as the base
    torch.testing.assert_close(_velocity(tiny_backbone), base_v)
    _randomise_lora_b(tiny_backbone)
    lora_v = _velocity(tiny_backbone)
    assert not torch.allclose(lora_v, base_v, atol=1e-3)
    with tiny_backbone.adapter_disabled():
        assert torch.equal(_velocity(tiny_backbone), base_v)
    # the adapter is back on after the context
    assert torch.equal(_velocity(tiny_backbone), lora_v)


def test_lora_scaling_matches_spec(tiny_backbone):
    tiny_backbone.add_lora(LoraSpec(rank=4, alpha=8), seed=0)
    _randomise_lora_b(tiny_backbone)
    layer = dict(tiny_backbone.denoiser().named_modules())["base_model.model.transformer_blocks.0.attn.to_q"]
    A = layer.lora_A["default"].weight
    Bw = layer.lora_B["default"].weight
    W, b = layer.base_layer.weight, layer.base_layer.bias
    inner = TINY["heads"] * TINY["head_dim"]
    assert A.shape == (4, inner) and Bw.shape == (inner, 4)
    h = torch.randn(5, inner, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = h @ W.T + b + (8 / 4) * (h @ A.T @ Bw.T)
        torch.testing.assert_close(layer(h), expected, rtol=1e-5, atol=1e-5)


def test_trainable_parameters_only_lora(tiny_backbone):
    n_before = len(tiny_backbone.trainable_parameters())
    assert n_before > 0  # the bare transformer is fully trainable
    tiny_backbone.add_lora(LoraSpec(rank=4, alpha=8))
    params = tiny_backbone.trainable_parameters()
    named = dict(tiny_backbone.denoiser().named_parameters())
    lora_ids = {id(p) for n, p in named.items() if "lora_" in n}
    assert {id(p) for p in params} == lora_ids
    # 7 attention projections in a 1-layer SD3 block (the last block has no to_add_out), A and B each
    assert len(params) == 14
    assert all(not p.requires_grad for n, p in named.items() if "lora_" not in n)


def test_lora_seed_is_deterministic():
    a, b = build_tiny(), build_tiny()
    a.add_lora(LoraSpec(rank=4, alpha=8), seed=11)
    b.add_lora(LoraSpec(rank=4, alpha=8), seed=11)
    pa = {n: p for n, p in a.denoiser().named_parameters() if "lora_A" in n}
    pb = {n: p for n, p in b.denoiser().named_parameters() if "lora_A" in n}
    assert pa.keys() == pb.keys() and pa
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_lora_unknown_targets_raise(tiny_backbone):
    with pytest.raises(ValueError):
        tiny_backbone.add_lora(LoraSpec(rank=4, alpha=8, target_modules=("nonexistent_proj",)))


def test_save_and_load_lora(tiny_model_dir, tmp_path):
    trained = load_backbone(tiny_model_dir, device="cpu")
    base_v = _velocity(trained)
    trained.add_lora(LoraSpec(rank=4, alpha=8), seed=0)
    _randomise_lora_b(trained, seed=7)
    lora_v = _velocity(trained)
    assert not torch.allclose(lora_v, base_v, atol=1e-3)
    adapter = tmp_path / "adapter"
    trained.save_adapter(adapter)
    assert (adapter / "adapter_config.json").exists()

    fresh = load_backbone(tiny_model_dir, device="cpu")
    assert torch.equal(_velocity(fresh), base_v)
    fresh.load_adapter(adapter)
    # not trainable by default
    assert fresh.trainable_parameters() == []
    assert torch.equal(_velocity(fresh), lora_v)
    with fresh.adapter_disabled():
        assert torch.equal(_velocity(fresh), base_v)
    assert torch.equal(_velocity(fresh), lora_v)

    via_loader = load_backbone(tiny_model_dir, adapter=adapter, device="cpu")
    assert torch.equal(_velocity(via_loader), lora_v)

    resumable = load_backbone(tiny_model_dir, device="cpu")
    resumable.load_adapter(adapter, trainable=True)
    names = [n for n, p in resumable.denoiser().named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)


def test_adapter_disabled_preserves_requires_grad(tiny_model_dir, tmp_path):
    """Switching the adapter off and on must not change which parameters are trainable.

    A frozen (inference) adapter loaded with ``load_lora(trainable=False)`` has no trainable parameters;
    after one pass through ``adapter_disabled`` it still should have none.
    """
    trained = load_backbone(tiny_model_dir, device="cpu")
    trained.add_lora(LoraSpec(rank=4, alpha=8), seed=0)
    trained.save_adapter(tmp_path / "adapter")

    frozen = load_backbone(tiny_model_dir, adapter=tmp_path / "adapter", device="cpu")
    assert frozen.trainable_parameters() == []
    with frozen.adapter_disabled():
        pass
    assert frozen.trainable_parameters() == []
