"""The trained adapter is usable in diffusers: ``pipe.load_lora_weights(run/adapter)`` loads it, and the pipeline's
own sampling with its defaults (``num_inference_steps`` only) then matches our Euler ODE sampler on the model's
grid at the same noise and steps (tiny SD3 and Flux pipelines)."""

from __future__ import annotations

import pytest
import torch

from tafs import flow
from tafs.models.loading import load_backbone
from tafs.models.lora import LoraSpec
from tafs.models.options import ModelOptions
from tafs.models.tiny import build_tiny_pipeline
from tafs.sampling.ode import sample_ode

PROMPT = "a red square left of a blue ring"
STEPS = 4


@pytest.fixture(scope="module", params=["sd3", "flux"])
def trained_adapter(request, tmp_path_factory):
    """A tiny pipeline and an adapter on it with random (non-zero) LoRA weights, saved the way training saves it."""
    root = tmp_path_factory.mktemp(f"lora_{request.param}")
    base = build_tiny_pipeline(request.param, root / "base")
    bb = load_backbone(base, device="cpu", options=ModelOptions(resolution=32))
    bb.add_lora(LoraSpec(rank=4, alpha=8, target_modules=bb.lora_targets), seed=0)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in bb.denoiser().named_parameters():
            if "lora_B" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    bb.save_adapter(root / "adapter")
    return request.param, base, root / "adapter"


def _ours(base, adapter, noise, linspace=False):
    """Our Euler ODE on the model's grid, or on shift(linspace(1, 0, N + 1)) at the model's shift."""
    bb = load_backbone(base, adapter=adapter, device="cpu", options=ModelOptions(resolution=32))
    sigmas = flow.ode_sigmas(STEPS, bb.default_shift) if linspace else None
    with torch.no_grad():
        return bb.decode(sample_ode(bb, bb.encode([PROMPT]), noise, STEPS, sigmas=sigmas))


def _pipeline(fam, base, adapter, noise):
    import diffusers

    pipe = getattr(diffusers, {"sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline"}[fam]).from_pretrained(base)
    if adapter is not None:
        pipe.load_lora_weights(adapter)  # the README's line
    kwargs = dict(height=32, width=32, num_inference_steps=STEPS, output_type="pt", max_sequence_length=128,
                  guidance_scale={"sd3": 4.5, "flux": 3.5}[fam])
    latents = noise if fam == "sd3" else pipe._pack_latents(noise, 1, 4, 16, 16)
    with torch.no_grad():
        return pipe(PROMPT, latents=latents, **kwargs).images


def test_adapter_folder_has_both_formats(trained_adapter):
    _, _, adapter = trained_adapter
    names = {p.name for p in adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "pytorch_lora_weights.safetensors"} <= names


def test_pipeline_with_the_adapter_samples_what_our_ode_samples(trained_adapter):
    fam, base, adapter = trained_adapter
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    ours = _ours(base, adapter, noise)
    theirs = _pipeline(fam, base, adapter, noise)
    torch.testing.assert_close(theirs.float(), ours, atol=1e-4, rtol=0)
    # the adapter matters: without it the pipeline draws something else
    plain = _pipeline(fam, base, None, noise)
    assert (plain.float() - ours).abs().max() > 1e-3


def test_the_shifted_linspace_grid_is_the_pipelines_for_flux_only(trained_adapter):
    """shift(linspace(1, 0, N + 1)), our former default, is what FluxPipeline samples with (its sigmas
    linspace(1, 1/N, N) shifted by exp(mu), then 0) but not what StableDiffusion3Pipeline samples with (its
    scheduler ends at shift(shift(0.001)) before 0, where that grid has shift(1/N)): a different image."""
    fam, base, adapter = trained_adapter
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    gap = (_pipeline(fam, base, adapter, noise).float() - _ours(base, adapter, noise, linspace=True)).abs().max()
    assert gap > 1e-3 if fam == "sd3" else gap < 1e-4, float(gap)
