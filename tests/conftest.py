"""Shared fixtures: tiny toy backbones and a fake analytic backbone.

Everything here is deliberately small: the test machine has 2 cores shared with a training job.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from tafs.models.backbone import Backbone, Cond

torch.set_num_threads(1)

STUB_PREFIX = "tafs-scontrol-"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The Slurm test goes first, so that it runs beside the other tests (it mostly waits on the scheduler): with
    `--dist loadfile` a worker takes it before anything else. Its Slurm client tools (installed by the test on a fresh
    machine, and kept) would make every other `snakemake` start wait 10 s in the Slurm executor plugin's `scontrol
    show config` once its cluster is stopped; every test gets an `scontrol` whose `show config` fails at once
    instead, and the Slurm test takes it off its own PATH (tests/test_slurm.py `_env`)."""
    items.sort(key=lambda item: not item.nodeid.startswith("tests/test_slurm.py"))
    _fast_failing_scontrol_show_config()


def _fast_failing_scontrol_show_config() -> None:
    """Prepend to PATH an `scontrol` that answers `show config` with an error at once (as on a machine without a
    controller, minus the 10 s wait) and hands everything else (`show hostnames`) to the real one, looked up when it
    is called (the Slurm test may install it later in the session)."""
    if STUB_PREFIX in os.environ.get("PATH", ""):
        return
    folder = Path(tempfile.mkdtemp(prefix=STUB_PREFIX))
    stub = folder / "scontrol"
    stub.write_text('#!/bin/sh\n[ "$1 $2" = "show config" ] && exit 1\n'
                    f'PATH="$(printf %s "$PATH" | tr : "\\n" | grep -v {STUB_PREFIX} | paste -sd:)"\n'
                    'exec scontrol "$@"\n')
    stub.chmod(0o755)
    os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ['PATH']}"


def path_without_scontrol_stub(path: str) -> str:
    """PATH without the stub above: what the Slurm test's own commands see."""
    return os.pathsep.join(p for p in path.split(os.pathsep) if STUB_PREFIX not in p)


TINY = dict(layers=1, heads=2, head_dim=8, text_dim=16, text_layers=1, text_heads=2)


class LinearFakeBackbone(Backbone):
    """v(x, sigma) = a * x + b * sigma (per sample), independent of the prompt.

    ``calls`` records (x, sigma) of every velocity call so tests can check what the sampler fed in.
    """

    def __init__(self, a: float = 0.5, b: float = 1.0, shape: tuple[int, ...] = (1, 2, 2)):
        self.a, self.b = a, b
        self._shape = shape
        self.device = torch.device("cpu")
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._module = torch.nn.Identity()

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self._shape

    def encode(self, prompts: list[str]) -> Cond:
        return Cond(torch.zeros(len(prompts), 3, 4), torch.zeros(len(prompts), 4))

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        assert sigma.shape == (x.shape[0],)
        self.calls.append((x.clone(), sigma.clone()))
        return self.a * x + self.b * sigma.reshape(-1, *([1] * (x.ndim - 1)))

    def decode_batch(self, x0: torch.Tensor) -> torch.Tensor:
        return x0

    def denoiser(self) -> torch.nn.Module:
        return self._module

    def set_denoiser(self, module: torch.nn.Module) -> None:
        self._module = module

    def frozen_modules(self) -> list[torch.nn.Module]:
        return []

    def to(self, device):
        self.device = torch.device(device)
        return self

    def save(self, path: str) -> None:  # pragma: no cover - not used
        raise NotImplementedError


def toy_prompts(split: str = "train"):
    """The toy task's prompts of a split (what the prompts rule writes for the default task)."""
    from tafs.tasks.toy import toy_prompts as make

    return make(split)


def brightness_reward(name: str):
    """A registered test reward: mean brightness, deterministic and different for every sample (a random
    tiny model's noise images all fail the toy checker alike, so its rewards would give no signal)."""
    from tafs.rewards.base import RewardSpec, check_batch

    def make():
        def reward(prompts, metadata, images):
            check_batch(prompts, metadata, images)
            return images.float().mean((1, 2, 3))
        return reward

    return RewardSpec(name, make, "Brightness", "test reward: mean pixel value")


@pytest.fixture
def fake_backbone() -> LinearFakeBackbone:
    return LinearFakeBackbone()


@pytest.fixture(scope="session")
def tiny_config():
    from tafs.models.toy import ToyModelConfig

    return ToyModelConfig(**TINY)


def build_tiny(seed: int = 0):
    from tafs.models.toy import ToyModelConfig, build_toy
    from tafs.toyworld.prompts import vocabulary

    b = build_toy(ToyModelConfig(**TINY), vocabulary(), seed=seed)
    b.transformer.eval()
    b.text_encoder.eval()
    return b


@pytest.fixture
def tiny_backbone():
    """A freshly built tiny toy backbone (function scope: LoRA tests mutate it)."""
    return build_tiny()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny toy backbone saved once per session in the hub layout."""
    path = tmp_path_factory.mktemp("toy") / "base"
    build_tiny().save(path)
    return path


def registered_brightness(name: str):
    """A module-scoped autouse fixture registering ``brightness_reward(name)`` for the module's tests:
    ``registered_reward = registered_brightness(REWARD)`` at module level."""
    from tafs.rewards import registry

    @pytest.fixture(scope="module", autouse=True)
    def _registered():
        registry.register(brightness_reward(name))
        yield
        registry.unregister(name)

    return _registered


def iterate_capturing(trainer, monkeypatch):
    """One ``trainer.iterate()`` with the optimiser replaced by a capture: (trajectory, advantage weights, row)."""
    seen = {}

    def fake_optimise(traj, cond, weights, gen, rows):
        seen.update(traj=traj, weights=weights.clone())
        return {}

    monkeypatch.setattr(trainer, "optimise", fake_optimise)
    row = trainer.iterate()
    return seen["traj"], seen["weights"], row
