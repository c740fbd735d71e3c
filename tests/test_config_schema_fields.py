"""One source of truth for the training config: every field of the dataclasses that the trainer reads
(TrainConfig and its nested MethodConfig, AdvantageConfig, LoraConfig) is accepted by the schema at top level
(`train:`) and under `methods.X.train`, with its default value; an unknown key is rejected in both places with
the key named. A field added to a dataclass without its schema entry fails here."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from tafs.config import schema_errors
from tafs.train.trainer import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")
# filled in by the DAG, never written in a config: the run's seed comes from `seeds`, reward options from
# `reward_models`
INTERNAL = {"seed", "reward_kwargs"}


def _config() -> dict[str, Any]:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def _fields(cls: type, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """(path, default value) of every leaf field, nested dataclasses expanded."""
    out = []
    for f in dataclasses.fields(cls):
        if not prefix and f.name in INTERNAL:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(default):
            out += _fields(type(default), (*prefix, f.name))
        else:
            out.append(((*prefix, f.name), list(default) if isinstance(default, tuple) else default))
    return out


def _set(d: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        d = d.setdefault(key, {})
    d[path[-1]] = value


FIELDS = _fields(TrainConfig)


def test_the_walk_finds_the_nested_sections():
    paths = {p for p, _ in FIELDS}
    assert {("lr",), ("method", "sampler"), ("advantage", "n_adv"), ("lora", "rank")} <= paths


@pytest.mark.parametrize("path, value", FIELDS, ids=[".".join(p) for p, _ in FIELDS])
@pytest.mark.parametrize("where", ["train", "methods.flow_grpo.train"])
def test_every_dataclass_field_is_accepted(path, value, where):
    if path == ("advantage", "rewards"):
        value = {"toy_dense": 1.0}  # the default {} means "the task's rewards"; a written mix names one
    cfg = _config()
    section = cfg["train"] if where == "train" else cfg["methods"]["flow_grpo"].setdefault("train", {})
    _set(section, path, copy.deepcopy(value))
    assert schema_errors(cfg, SCHEMA) == []


@pytest.mark.parametrize("where", ["train", "methods.flow_grpo.train"])
@pytest.mark.parametrize("path", [("lr_typo",), ("method", "n_stepz"), ("advantage", "clipp"), ("lora", "rnk")])
def test_unknown_keys_are_rejected_with_their_name(path, where):
    cfg = _config()
    section = cfg["train"] if where == "train" else cfg["methods"]["flow_grpo"].setdefault("train", {})
    _set(section, path, 1)
    errors = schema_errors(cfg, SCHEMA)
    assert errors and any(path[-1] in e for e in errors), errors


def test_the_sampler_enum_is_the_registry():
    """``method.sampler``'s names are written once, in tafs.train.samplers; the schema's enum (in ``$defs.train``,
    which ``train`` and ``methods.X.train`` refer to) repeats them."""
    from tafs.train.samplers import SAMPLERS

    schema = yaml.safe_load(Path(SCHEMA).read_text())
    train = schema["properties"]["train"]
    assert train == {"$ref": "#/$defs/train"}
    method = schema["$defs"]["train"]["properties"]["method"]
    assert method["properties"]["sampler"]["enum"] == list(SAMPLERS)


def _enums(node: Any, path: tuple[str, ...] = ()) -> dict[str, list]:
    """Every `enum` of the schema by its dotted path."""
    out: dict[str, list] = {}
    if isinstance(node, dict):
        if "enum" in node:
            out[".".join(path)] = [v for v in node["enum"] if v is not None]
        for k, v in node.items():
            out.update(_enums(v, (*path, str(k))))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.update(_enums(v, (*path, str(i))))
    return out


def test_each_schema_enum_is_the_codes_constant():
    """Each choice is written once in the code that acts on it; the schema's enum (which Snakemake validates before
    any job) is checked against that constant here, so the two cannot drift."""
    from tafs.evaluate import ODE_GRIDS, SAMPLERS
    from tafs.evaluate_pipeline import OFFLOADS
    from tafs.models.lora import LORA_INITS
    from tafs.models.options import DTYPES
    from tafs.models.tiny import FAMILIES
    from tafs.sampling.sde import CPS_LOGPROBS
    from tafs.sources import TINY_FAMILIES
    from tafs.tasks.base import DOMAINS, SPLITS
    from tafs.train.advantages import AGGREGATIONS, GROUP_BY, MODES, STD_SCOPES
    from tafs.train.ratio import OLD_LOGPROB
    from tafs.train.reference import KL_RULES, SIGMA_GRIDS, WINDOW_RULES
    from tafs.train.trainer import PROMPT_SAMPLING

    method, adv = "$defs.train.properties.method.properties.", "$defs.train.properties.advantage.properties."
    want = {
        "$defs.dtype": list(DTYPES),
        "$defs.train.properties.prompt_sampling": PROMPT_SAMPLING,
        "$defs.train.properties.old_logprob": OLD_LOGPROB,
        "$defs.train.properties.lora.properties.init": LORA_INITS,
        method + "cps_logprob": CPS_LOGPROBS, method + "sigma_grid": SIGMA_GRIDS, method + "window_rule": WINDOW_RULES,
        method + "kl": KL_RULES,
        adv + "mode": MODES, adv + "aggregation": AGGREGATIONS, adv + "std": STD_SCOPES, adv + "group_by": GROUP_BY,
        "properties.ablations.properties.advantage_modes.items": MODES,
        "properties.tasks.additionalProperties.properties.metrics.additionalProperties.properties.domain": DOMAINS,
        "properties.model.properties.pretrained.anyOf.2.properties.tiny": TINY_FAMILIES,
        "properties.baselines.additionalProperties.properties.offload": [o for o in OFFLOADS if o],
        "properties.methods.additionalProperties.properties.eval_sampler": SAMPLERS,
        "properties.tables.properties.base_rows.items.prefixItems.0": SAMPLERS,
        "properties.sweep.properties.base_samplers.items": SAMPLERS,
        "properties.sweep.properties.run_samplers.items": SAMPLERS,
        "properties.eval.properties.split": SPLITS,
        "properties.eval.properties.ode_grid": ODE_GRIDS,
    }
    enums = _enums(yaml.safe_load(Path(SCHEMA).read_text()))
    assert {k: enums.get(k) for k in want} == {k: list(v) for k, v in want.items()}
    assert list(FAMILIES) == list(TINY_FAMILIES)  # the tiny pipelines the loader builds = those a config may name
