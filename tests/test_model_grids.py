"""Each backbone's Euler ODE grid (``scheduler_sigmas``) is its diffusers scheduler's, set the way its pipeline
sets it; the ODE sampler and the evaluation use it unless told otherwise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tafs import flow
from tafs.evaluate import EvalConfig, ode_grid
from tafs.models.loading import load_backbone
from tafs.models.options import ModelOptions
from tafs.models.tiny import build_tiny_pipeline
from tafs.sampling.ode import sample_ode

from conftest import LinearFakeBackbone, build_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("grids")
    return {f: load_backbone(build_tiny_pipeline(f, root / f), device="cpu", options=ModelOptions(resolution=32))
            for f in ("sd3", "flux")}


def _diffusers(nfe: int, **kwargs) -> torch.Tensor:
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(**kwargs)
    sched.set_timesteps(nfe)
    return sched.sigmas.double()


@pytest.mark.parametrize("nfe", [1, 4, 8])
def test_toy_grid_is_diffusers_at_shift_one(nfe):
    bb = build_tiny()
    assert bb.default_shift == 1.0
    torch.testing.assert_close(bb.scheduler_sigmas(nfe), _diffusers(nfe, shift=1.0), atol=1e-6, rtol=0)


def test_toy_grid_by_hand():
    torch.testing.assert_close(build_tiny().scheduler_sigmas(2), torch.tensor([1.0, 0.001, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("nfe", [1, 4, 10])
def test_sd3_grid_is_its_static_shift_scheduler(tiny, nfe):
    sig = tiny["sd3"].scheduler_sigmas(nfe)
    assert sig.dtype == torch.float64 and len(sig) == nfe + 1 and float(sig[0]) == 1.0 and float(sig[-1]) == 0.0
    torch.testing.assert_close(sig, flow.scheduler_sigmas(nfe, 3.0), atol=1e-6, rtol=0)


def test_sd3_grid_with_a_dynamically_shifting_scheduler(tiny):
    """mu from the latent's patch count ((16 / 2)^2 = 64) on the scheduler's line (here 0.6 at 256, 1.2 at 4096),
    applied as exp(mu) t / (exp(mu) t + 1 - t) to linspace(1, 0.001, n) (no static shift when dynamic), then 0."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    bb = tiny["sd3"]
    static = bb.pipe.scheduler
    try:
        bb.pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.6,
                                                                 max_shift=1.2)
        k = math.exp(0.6 + (1.2 - 0.6) / (4096 - 256) * (64 - 256))
        t = np.linspace(1.0, 0.001, 5)
        want = torch.tensor([*(k * t / (k * t + 1 - t)), 0.0], dtype=torch.float64)
        torch.testing.assert_close(bb.scheduler_sigmas(5), want, atol=1e-6, rtol=0)
    finally:
        bb.pipe.scheduler = static


@pytest.mark.parametrize("nfe", [1, 4, 8])
def test_flux_grid_is_its_shifted_linspace(tiny, nfe):
    """FluxPipeline: linspace(1, 1/N, N) shifted by exp(mu), then 0 = shift(linspace(1, 0, N + 1))."""
    bb = tiny["flux"]
    torch.testing.assert_close(bb.scheduler_sigmas(nfe), flow.ode_sigmas(nfe, bb.default_shift), atol=1e-6, rtol=0)


def test_sample_ode_defaults_to_the_models_grid():
    bb = LinearFakeBackbone()
    x = torch.randn(2, *bb.latent_shape, generator=torch.Generator().manual_seed(0))
    cond = bb.encode(["a", "b"])
    out = sample_ode(bb, cond, x, 3)
    assert [round(float(s[0]), 6) for _, s in bb.calls] == [1.0, 0.5005, 0.001]
    # by hand: x' = x + (s' - s)(a x + b s), a = 0.5, b = 1, over 1 -> 0.5005 -> 0.001 -> 0
    want = x
    for s, s2 in [(1.0, 0.5005), (0.5005, 0.001), (0.001, 0.0)]:
        want = want + (s2 - s) * (0.5 * want + s)
    torch.testing.assert_close(out, want)
    with pytest.raises(ValueError, match="nfe \\+ 1"):
        sample_ode(bb, cond, x, 3, sigmas=[1.0, 0.0])


def test_eval_grid_options():
    bb = LinearFakeBackbone()
    assert EvalConfig().ode_grid == "scheduler"
    torch.testing.assert_close(ode_grid(bb, EvalConfig(nfe=4)), flow.scheduler_sigmas(4))
    torch.testing.assert_close(ode_grid(bb, EvalConfig(nfe=4, ode_grid="linspace")),
                               torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64))
    torch.testing.assert_close(ode_grid(bb, EvalConfig(nfe=4, ode_grid="linspace", shift=3.0)), flow.ode_sigmas(4, 3.0))
    torch.testing.assert_close(ode_grid(bb, EvalConfig(nfe=4, shift=3.0)), flow.scheduler_sigmas(4, 3.0))
    with pytest.raises(ValueError, match="ode_grid"):
        EvalConfig(ode_grid="karras")
