"""The sampler registry (tafs.train.samplers): what each registered sampler declares, and that a new sampler is
one module plus a registry line: a sampler defined here trains through the real Trainer and sets its run's
evaluation sampler."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from conftest import registered_brightness, toy_prompts
from tafs.config import ConfigError, from_dict
from tafs.grid import natural_sampler
from tafs.io import read_jsonl
from tafs.models.loading import load_backbone
from tafs.sampling.sde import flow_sde_transition
from tafs.sampling.trajectory import Transition
from tafs.train import methods
from tafs.train.methods import Method, MethodConfig
from tafs.train.samplers import SAMPLERS, get_sampler, register
from tafs.train.samplers.base import RESTRICTED, MethodCfg, Sampler, SDESampler
from tafs.train.trainer import Trainer, TrainConfig

torch.set_num_threads(1)

REWARD = "test_sampler_registry_brightness"
registered_reward = registered_brightness(REWARD)


class FirstTwoSDE(SDESampler):
    """A toy sampler: the Flow-GRPO SDE on the first two steps only, the Euler ODE after them (a MixGRPO window
    that never moves). Evaluated with the annealed chain, unlike every built-in SDE sampler, so that the grid's
    choice visibly comes from the class."""

    name: ClassVar[str] = "first_two_sde"
    eval_sampler: ClassVar[str] = "annealed"
    default_grid: ClassVar[str | None] = "linspace"

    def stochastic_mask(self, cfg: MethodCfg, iteration: int) -> list[bool]:
        return [j < 2 for j in range(self.num_actions(cfg))]

    def transition(self, cfg: MethodCfg) -> Transition:
        return flow_sde_transition(cfg.eta)


@pytest.fixture
def first_two():
    register(FirstTwoSDE)
    try:
        yield FirstTwoSDE
    finally:
        del SAMPLERS[FirstTwoSDE.name]


# -- the registry ------------------------------------------------------------------------------------------

def test_the_builtin_samplers_and_what_they_declare():
    assert list(SAMPLERS) == ["annealed", "flow_sde", "dance_sde", "mix_sde", "cps"]
    assert all(name == cls.name and issubclass(cls, Sampler) for name, cls in SAMPLERS.items())
    assert {n: c.eval_sampler for n, c in SAMPLERS.items()} == {
        "annealed": "annealed", "flow_sde": "ode", "dance_sde": "ode", "mix_sde": "ode", "cps": "ode"}
    assert all(c.options <= set(RESTRICTED) for c in SAMPLERS.values())
    # the former constants of tafs.train.methods, now read from the registry
    assert methods.SAMPLERS == tuple(SAMPLERS)
    assert methods.SDE_SAMPLERS == ("flow_sde", "dance_sde", "mix_sde", "cps")
    assert methods.LAST_NOISE_SAMPLERS == ("flow_sde", "mix_sde")
    assert methods.DRIFT_SAMPLERS == ("flow_sde", "dance_sde", "mix_sde")
    assert methods.FRACTION_SAMPLERS == ("flow_sde", "dance_sde")
    assert methods.DEFAULT_GRID == {"flow_sde": "scheduler", "cps": "scheduler", "dance_sde": "linspace",
                                    "mix_sde": "linspace"}


def test_an_unknown_sampler_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match=r"method.sampler must be one of \('annealed', 'flow_sde'.*'cps'\), got 'sde'"):
        get_sampler("sde")
    with pytest.raises(ConfigError, match="method.sampler"):
        natural_sampler({"method": {"sampler": "sde"}})


def test_a_name_is_registered_once(first_two):
    register(FirstTwoSDE)  # the same class again: nothing changes
    clash = type("Clash", (FirstTwoSDE,), {})
    with pytest.raises(ValueError, match="first_two_sde"):
        register(clash)
    with pytest.raises(TypeError, match="subclass"):
        register(object)  # type: ignore[arg-type]


# -- adding a sampler --------------------------------------------------------------------------------------

def test_a_registered_sampler_is_validated_like_the_others(first_two):
    assert "first_two_sde" in methods.SAMPLERS and "first_two_sde" in methods.SDE_SAMPLERS
    cfg = MethodConfig(sampler="first_two_sde", n_steps=4)
    m = Method(cfg, default_shift=3.0)
    assert m.cfg.shift == 3.0 and m.sigma_grid == "linspace" and m.num_actions == 3
    assert m.trained_mask(0) == [True, True, False]
    assert m.nfe_accounting() == {"nfe_old": 4, "nfe_theta": 2}
    with pytest.raises(ValueError, match="method.n_steps"):  # the shared SDE checks
        MethodConfig(sampler="first_two_sde", n_steps=1)
    with pytest.raises(ValueError, match=r"method.last_step_noise applies to the samplers \('flow_sde', 'mix_sde'\)"):
        MethodConfig(sampler="first_two_sde", last_step_noise=True)  # not in its options


def test_a_new_sampler_trains_through_the_trainer(first_two, tiny_model_dir, tmp_path, monkeypatch):
    train = {"seed": 0, "iterations": 1, "prompts_per_iter": 2, "group_size": 2, "lr": 1e-2, "minibatches": 1,
             "checkpoint_every": 1, "lora": {"rank": 2, "alpha": 4},
             "method": {"sampler": "first_two_sde", "n_steps": 4, "eta": 0.7},
             "advantage": {"rewards": {REWARD: 1.0}, "n_adv": 1}}
    assert natural_sampler(train) == "annealed"  # the class's eval_sampler, not the SDE default "ode"
    cfg = from_dict(TrainConfig, train, "train")
    trainer = Trainer(load_backbone(tiny_model_dir, device="cpu"), cfg, tmp_path / "ck", toy_prompts("train"))
    assert isinstance(trainer.method.sampler, FirstTwoSDE)
    seen = []

    def spy(self, *args):
        seen.append(SDESampler.sample(self, *args))
        return seen[-1]

    monkeypatch.setattr(FirstTwoSDE, "sample", spy)
    summary = trainer.run(resume=False)  # one iteration: sampling, the rewards, the loss, an optimiser step
    assert summary["iterations"] == 1 and len(seen) == 1
    traj = seen[0]
    assert traj.trained.tolist() == [True, True, False] and traj.nfe == 4
    assert torch.equal(traj.log_probs[:, 2], torch.zeros(4))  # the ODE step: log-prob 0
    rows = read_jsonl(tmp_path / "ck" / "metrics.jsonl")
    assert [(r["nfe_old"], r["nfe_theta"]) for r in rows] == [(4, 2)] and rows[0]["grad_norm"] > 0
