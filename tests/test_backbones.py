"""SD3 and Flux backbones on tiny random pipelines of the real classes, saved in the hub layout and loaded back.

The annealed chain on each backbone is checked against a chain written here by hand that calls the diffusers
transformer directly (same noise, fp32, 1e-5); the policy ratio is 1 before the first update; a folder built
with other sizes than tafs.models.tiny's loads too.
"""

from __future__ import annotations

import math

import pytest
import torch

from tafs import flow
from tafs.models.loading import load_backbone
from tafs.models.options import ModelOptions
from tafs.models.tiny import build_tiny_pipeline
from tafs.rewards import registry
from tafs.sampling.annealed import sample_annealed

from conftest import brightness_reward, toy_prompts

PROMPTS = ["a red square left of a blue ring", "three crosses"]
K = 3


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_pipelines")
    return {fam: build_tiny_pipeline(fam, root / fam) for fam in ("sd3", "flux")}


def _load(tiny_dirs, fam, **opts):
    return load_backbone(tiny_dirs[fam], device="cpu", options=ModelOptions(**{"resolution": 32, **opts}))


def test_loader_dispatches_on_model_index(tiny_dirs):
    sd3, flux = _load(tiny_dirs, "sd3"), _load(tiny_dirs, "flux")
    assert type(sd3).__name__ == "SD3Backbone" and type(flux).__name__ == "FluxBackbone"
    assert sd3.latent_shape == (4, 16, 16) and flux.latent_shape == (4, 16, 16)
    assert sd3.default_shift == 3.0 and sd3.guidance == 4.5 and flux.guidance == 3.5
    # Flux: exp(mu), mu linear in the packed token count (8 x 8 = 64 tokens at 32 px), as diffusers computes it
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    assert flux.default_shift == pytest.approx(math.exp(calculate_shift(64, 256, 4096, 0.5, 1.15)))
    assert "ff.net.0.proj" in flux.lora_targets and "ff.net.0.proj" not in sd3.lora_targets
    for bb in (sd3, flux):
        frozen = bb.frozen_modules()
        assert bb.vae in frozen and len(frozen) == len(bb.text_components) + 1
    with pytest.raises(ValueError, match="multiple of 4"):
        _load(tiny_dirs, "flux", resolution=34)


def test_encode_and_decode_match_the_pipeline(tiny_dirs):
    for fam in ("sd3", "flux"):
        bb = _load(tiny_dirs, fam)
        cond = bb.encode(PROMPTS)
        assert cond.hidden.shape[0] == 2 and cond.pooled.shape[0] == 2 and not cond.hidden.requires_grad
        z = torch.randn(3, *bb.latent_shape, generator=torch.Generator().manual_seed(0))
        vae = bb.pipe.vae
        ref = vae.decode(z / vae.config.scaling_factor + vae.config.shift_factor, return_dict=False)[0]
        ref = bb.pipe.image_processor.postprocess(ref.detach(), output_type="pt")
        torch.testing.assert_close(bb.decode(z), ref, atol=1e-6, rtol=0)
        torch.testing.assert_close(bb.decode(z, chunk_size=2), ref, atol=1e-6, rtol=0)


def _shifted_annealed(shift: float) -> list[float]:
    return [shift * s / (1 + (shift - 1) * s) for s in (1 - n / (K + 1) for n in range(K + 1))]


@torch.no_grad()
def _hand_chain(step, noise: torch.Tensor, shift: float, gen: torch.Generator) -> torch.Tensor:
    """x0 = x - s v; re-noise to the next sigma with fresh noise; the last estimate is the image (DESIGN §4)."""
    sigmas = _shifted_annealed(shift)
    x = noise
    for n, s in enumerate(sigmas):
        x0 = x - s * step(x, s)
        if n + 1 == len(sigmas):
            return x0
        eps = torch.randn(x.shape, generator=gen)
        x = (1 - sigmas[n + 1]) * x0 + sigmas[n + 1] * eps


def test_annealed_chain_on_sd3_matches_a_hand_written_chain(tiny_dirs):
    bb = _load(tiny_dirs, "sd3")
    pipe, tr = bb.pipe, bb.pipe.transformer
    h, _, p, _ = pipe.encode_prompt(PROMPTS, None, None, device="cpu", do_classifier_free_guidance=False,
                                    max_sequence_length=128)
    hn, _, pn, _ = pipe.encode_prompt([""], None, None, device="cpu", do_classifier_free_guidance=False,
                                      max_sequence_length=128)

    def step(x, s):  # real classifier-free guidance, scale 4.5, empty negative prompt
        t = torch.full((x.shape[0],), s * 1000.0)
        v_c = tr(hidden_states=x, timestep=t, encoder_hidden_states=h, pooled_projections=p).sample
        v_u = tr(hidden_states=x, timestep=t, encoder_hidden_states=hn.expand(2, -1, -1),
                 pooled_projections=pn.expand(2, -1)).sample
        return v_u + 4.5 * (v_c - v_u)

    noise = torch.randn(2, *bb.latent_shape, generator=torch.Generator().manual_seed(1))
    want = _hand_chain(step, noise, 3.0, torch.Generator().manual_seed(2))
    got = sample_annealed(bb, bb.encode(PROMPTS), noise, K, torch.Generator().manual_seed(2), bb.default_shift)
    torch.testing.assert_close(got.final, want, atol=1e-5, rtol=1e-5)
    assert got.nfe == K + 1
    torch.testing.assert_close(got.sigmas.double(), torch.tensor(_shifted_annealed(3.0)[:-1], dtype=torch.float64))


def test_annealed_chain_on_flux_matches_a_hand_written_chain(tiny_dirs):
    bb = _load(tiny_dirs, "flux")
    pipe, tr = bb.pipe, bb.pipe.transformer
    h, p, _ = pipe.encode_prompt(PROMPTS, None, device="cpu", max_sequence_length=128)
    ids = torch.stack(torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij"), -1).reshape(64, 2)
    img_ids = torch.cat([torch.zeros(64, 1), ids], 1)  # (0, row, column) per 2x2 patch

    def pack(x):  # (B, C, 16, 16) -> (B, 64 tokens, 4 C): 2x2 patches, channels last
        b, c = x.shape[:2]
        return x.reshape(b, c, 8, 2, 8, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, 64, c * 4)

    def unpack(t):
        b = t.shape[0]
        return t.reshape(b, 8, 8, 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, 4, 16, 16)

    def step(x, s):  # guidance is an input of the transformer (distilled), no negative pass
        out = tr(hidden_states=pack(x), timestep=torch.full((2,), s), guidance=torch.full((2,), 3.5),
                 pooled_projections=p, encoder_hidden_states=h, txt_ids=torch.zeros(h.shape[1], 3),
                 img_ids=img_ids).sample
        return unpack(out)

    noise = torch.randn(2, *bb.latent_shape, generator=torch.Generator().manual_seed(1))
    want = _hand_chain(step, noise, bb.default_shift, torch.Generator().manual_seed(2))
    got = sample_annealed(bb, bb.encode(PROMPTS), noise, K, torch.Generator().manual_seed(2), bb.default_shift)
    torch.testing.assert_close(got.final, want, atol=1e-5, rtol=1e-5)


REWARD = "test_backbones_brightness"


@pytest.mark.parametrize("fam", ["sd3", "flux"])
def test_policy_ratio_is_one_before_the_first_update(tiny_dirs, tmp_path, fam):
    from tafs.config import from_dict
    from tafs.train.trainer import Trainer, TrainConfig

    registry.register(brightness_reward(REWARD))
    try:
        cfg = from_dict(TrainConfig, {"iterations": 1, "prompts_per_iter": 2, "group_size": 2, "minibatches": 1,
                                      "beta": 0.01, "lora": {"rank": 4, "alpha": 8},
                                      "advantage": {"rewards": {REWARD: 1.0}}}, "train")
        trainer = Trainer(_load(tiny_dirs, fam), cfg, tmp_path / "ck", toy_prompts("train"))
        names = [n for n, _ in trainer.backbone.denoiser().named_parameters() if "lora_A" in n]
        assert (any(".ff." in n for n in names)) == (fam == "flux")  # Flux also adapts its MLPs
        row = trainer.iterate()
    finally:
        registry.unregister(REWARD)
    assert abs(row["ratio"] - 1) < 1e-5 and row["approx_kl"] < 1e-9 and row["kl"] < 1e-12, row
    assert row["grad_norm"] > 0 and row["nfe_old"] == K + 1


def test_a_folder_built_elsewhere_loads(tmp_path):
    """Any folder diffusers loads as a StableDiffusion3Pipeline works, whatever its sizes (here: 3 blocks, a VAE
    with scale factor 4, 64 px), not only those tafs.models.tiny writes."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    from tafs.models.tiny import _clip_config, _t5, clip_tokenizer, t5_tokenizer

    torch.manual_seed(3)
    tok, t5tok = clip_tokenizer(), t5_tokenizer()
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(4, 4, 8), layers_per_block=1,
                        latent_channels=8, norm_num_groups=1, down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, shift_factor=0.1, scaling_factor=1.3)
    tr = SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=8, out_channels=8, num_layers=3,
                               attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                               caption_projection_dim=32, pooled_projection_dim=64, pos_embed_max_size=8)
    pipe = StableDiffusion3Pipeline(transformer=tr, scheduler=FlowMatchEulerDiscreteScheduler(shift=2.0), vae=vae,
                                    text_encoder=CLIPTextModelWithProjection(_clip_config(len(tok))), tokenizer=tok,
                                    text_encoder_2=CLIPTextModelWithProjection(_clip_config(len(tok))),
                                    tokenizer_2=tok, text_encoder_3=_t5(len(t5tok)), tokenizer_3=t5tok)
    pipe.save_pretrained(tmp_path / "other")
    bb = load_backbone(tmp_path / "other", device="cpu", options=ModelOptions(guidance_scale=1.0))
    assert bb.resolution == 64 and bb.latent_shape == (8, 16, 16) and bb.default_shift == 2.0
    x = torch.randn(2, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    cond = bb.encode(PROMPTS)
    with torch.no_grad():
        want = tr(hidden_states=x, timestep=torch.full((2,), 700.0), encoder_hidden_states=cond.hidden,
                  pooled_projections=cond.pooled).sample
        torch.testing.assert_close(bb.velocity(x, torch.full((2,), 0.7), cond), want, atol=1e-5, rtol=1e-5)
    assert bb.decode(torch.zeros(1, 8, 16, 16)).shape == (1, 3, 64, 64)
    assert torch.allclose(flow.ode_sigmas(2, bb.default_shift), torch.tensor([1.0, 2 / 3, 0.0], dtype=torch.float64))


def test_precision_per_component_and_gradient_checkpointing(tiny_dirs):
    """bf16 transformer, fp32 VAE, fp16 text encoders; latents and the returned velocity stay fp32."""
    bb = _load(tiny_dirs, "sd3", dtype="bf16", text_dtype="fp16", vae_dtype="fp32", gradient_checkpointing=True)
    assert next(bb.transformer.parameters()).dtype == torch.bfloat16 and bb.transformer.gradient_checkpointing
    assert bb.vae.dtype == torch.float32 and bb.pipe.text_encoder_3.dtype == torch.float16
    x = torch.randn(2, *bb.latent_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        v = bb.velocity(x, torch.full((2,), 0.5), bb.encode(PROMPTS))
    assert v.dtype == torch.float32 and torch.isfinite(v).all()
    full = _load(tiny_dirs, "sd3")
    with torch.no_grad():
        v32 = full.velocity(x, torch.full((2,), 0.5), full.encode(PROMPTS))
    assert (v - v32).abs().max() < 0.1 * v32.abs().max()  # the same model, in lower precision
