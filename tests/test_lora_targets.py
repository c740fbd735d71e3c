"""SD3's LoRA adapts exactly the modules flow_grpo's list selects (SD3.5-M's second attention, ``attn2``, stays
frozen), and ``init: gaussian`` is peft's gaussian init (flow_grpo's)."""

from __future__ import annotations

import copy

import pytest
import torch

from tafs.config import from_dict
from tafs.models.lora import ATTENTION_TARGETS, LoraSpec, attach_lora
from tafs.models.sd3 import SD3Backbone
from tafs.train.trainer import LoraConfig, TrainConfig

# flow_grpo scripts/train_sd3.py:419-428 (yifan123/flow_grpo@ac4c86e), verbatim
FLOW_GRPO_SD3 = ["attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out", "attn.to_k",
                 "attn.to_out.0", "attn.to_q", "attn.to_v"]
RANK = 4


@pytest.fixture(scope="module")
def dual_transformer():
    """A tiny MMDiT whose first block has SD3.5-M's dual attention (attn and attn2)."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    return SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
                                 attention_head_dim=8, num_attention_heads=4, joint_attention_dim=32,
                                 caption_projection_dim=32, pooled_projection_dim=64, pos_embed_max_size=4,
                                 dual_attention_layers=(0,))


def _adapted(model: torch.nn.Module) -> set[str]:
    from peft.tuners.lora import LoraLayer

    return {n.removeprefix("base_model.model.") for n, m in model.named_modules() if isinstance(m, LoraLayer)}


def _selected(names: list[str], targets: list[str]) -> set[str]:
    """peft's rule for a list of target_modules: the name is the target or ends with '.' + target."""
    return {n for n in names if any(n == t or n.endswith("." + t) for t in targets)}


def test_sd3_targets_adapt_flow_grpos_modules_and_not_attn2(dual_transformer):
    names = [n for n, _ in dual_transformer.named_modules()]
    assert any(".attn2." in n for n in names)  # the test model has the second attention
    assert set(SD3Backbone.lora_targets) == set(FLOW_GRPO_SD3)
    want = _selected(names, FLOW_GRPO_SD3)
    # both blocks' 8 joint projections, less the last block's to_add_out (context_pre_only): 15
    assert len(want) == 15
    got = _adapted(attach_lora(copy.deepcopy(dual_transformer), LoraSpec(rank=RANK, alpha=RANK,
                                                                         target_modules=SD3Backbone.lora_targets)))
    assert got == want and not any("attn2" in n for n in got)
    # the bare suffixes would also adapt attn2's to_q, to_k, to_v, to_out.0
    bare = _adapted(attach_lora(copy.deepcopy(dual_transformer), LoraSpec(rank=RANK, alpha=RANK,
                                                                          target_modules=ATTENTION_TARGETS)))
    assert bare - got == {f"transformer_blocks.0.attn2.{t}" for t in ("to_q", "to_k", "to_v", "to_out.0")}


def _lora_weights(model: torch.nn.Module, which: str) -> list[torch.Tensor]:
    return [p.detach() for n, p in model.named_parameters() if f"{which}.default" in n]


@pytest.mark.parametrize("init", ["default", "gaussian"])
def test_lora_init(dual_transformer, init):
    model = attach_lora(copy.deepcopy(dual_transformer), LoraSpec(rank=RANK, alpha=RANK, init=init,
                                                                  target_modules=SD3Backbone.lora_targets), seed=0)
    assert all(torch.equal(b, torch.zeros_like(b)) for b in _lora_weights(model, "lora_B"))  # starts at the base
    a = torch.cat([w.flatten() for w in _lora_weights(model, "lora_A")])
    fan_in = 32  # every targeted projection reads the 4 x 8 wide hidden state
    if init == "gaussian":  # peft: N(0, 1 / r)
        assert float(a.std()) == pytest.approx(1 / RANK, rel=0.05) and float(a.abs().max()) > 1 / fan_in ** 0.5
    else:  # peft's default: kaiming_uniform(a = sqrt 5), bound sqrt(6 / ((1 + 5) fan_in)) = 1 / sqrt(fan_in)
        assert float(a.abs().max()) <= 1 / fan_in ** 0.5
        assert float(a.std()) == pytest.approx(1 / (3 * fan_in) ** 0.5, rel=0.05)


def test_lora_init_option_in_the_train_config():
    assert from_dict(TrainConfig, {"lora": {"init": "gaussian"}}, "train").lora.init == "gaussian"
    assert LoraConfig().init == "default"
    with pytest.raises(ValueError, match="gaussian"):
        from_dict(TrainConfig, {"lora": {"init": "pissa"}}, "train")
    with pytest.raises(ValueError):
        LoraSpec(init="orthogonal")
