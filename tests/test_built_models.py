"""Models a task builds in the DAG (TaskSpec.builds): the toy task declares its base and its scorer, the generic
rule build_model builds whatever a task declares, and a config that asks for a built model its task lacks fails
naming the key."""

from __future__ import annotations

import re

import pytest
import yaml

from dag_utils import REPO
from tafs.config import ConfigError
from tafs.paths import Layout
from tafs.sources import Sources
from tafs.tasks.base import BuiltModel

SCORE = BuiltModel("judge", "train-judge", "judge", "reward:pickscore", "judge_metrics.json")


def _config(**over) -> dict:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg.update(over)
    return cfg


def test_the_toy_task_declares_its_base_and_scorer():
    from tafs.dag import Plan

    plan = Plan(_config())  # the shipped base: only the scorer is built
    assert list(plan.built_models()) == ["clip_scorer"]
    assert plan.reward_kwargs()["clip"]["path"] == str(Layout("results").built_model("clip_scorer"))
    plan = Plan(_config(model={"pretrained": None}))
    assert list(plan.built_models()) == ["base", "clip_scorer"]
    assert plan.base_model() == "results/models/base"
    args = plan.build_model_args("base")
    assert args.startswith("pretrain --cfg ") and args.endswith("--ckpt-dir results/checkpoints/pretrain")
    assert '"steps": 6000' in args  # config `pretrain:` as the job's --cfg
    assert plan.build_model_args("clip_scorer").startswith("train-scorer --cfg ")


def test_a_task_of_another_world_builds_its_own_models():
    """Nothing generic knows the toy names: a task declaring another model gets its folder and rule inputs."""
    config = {"model": {"pretrained": "assets/toy-base"}, "reward_models": {"pickscore": {"path": None}}}
    src = Sources(config, Layout("out"), (SCORE,), "task 'x'")
    assert src.reward_kwargs("pickscore", {"path": None}) == {"path": "out/models/judge"}
    assert src.reward_outputs("pickscore") == ["out/models/judge"] and list(src.built_models(["pickscore"])) == ["judge"]


def test_a_built_model_the_task_lacks_names_the_key():
    with pytest.raises(ConfigError, match=re.escape("model.pretrained: null asks task 'x' to build its base model")):
        Sources({"model": {"pretrained": None}}, Layout("out"), (SCORE,), "task 'x'")
    config = {"model": {"pretrained": "assets/toy-base"}, "reward_models": {"clip": {"path": None}}}
    src = Sources(config, Layout("out"), (SCORE,), "task 'x'")
    src.check_buildable(["pickscore"])  # a null no job reads stays null: nothing to build, nothing to check
    assert src.built_models(["pickscore"]) == {} and src.reward_kwargs("clip", {"path": None}) == {"path": None}
    with pytest.raises(ConfigError, match=re.escape("reward_models.clip.path: null asks task 'x' to build this "
                                                    "reward's model, and it builds none for 'clip'")):
        src.check_buildable(["clip"])


def test_provides_is_checked():
    with pytest.raises(ConfigError, match="provides must be 'base' or 'reward:<name>'"):
        BuiltModel("m", "cmd", "sec", "scorer")
