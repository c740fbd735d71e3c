"""Config parsing, atomic writes and summary statistics."""

from __future__ import annotations

import json
import os

import pytest

from tafs.config import ConfigError, from_dict, parse_json_arg
from tafs.io import append_jsonl, atomic_dir, atomic_path, read_json, read_jsonl, write_json
from tafs.models.backbone import LoraSpec
from tafs.models.toy import ToyModelConfig
from tafs.toyworld.pretrain import PretrainConfig

# -- config ------------------------------------------------------------------------------------------


def test_defaults_from_empty_and_none():
    assert from_dict(PretrainConfig, {}) == PretrainConfig()
    assert from_dict(PretrainConfig, None) == PretrainConfig()


def test_unknown_key_is_named():
    with pytest.raises(ConfigError) as e:
        from_dict(PretrainConfig, {"steps": 10, "stepz": 3}, where="pretrain")
    assert "stepz" in str(e.value)
    assert "pretrain" in str(e.value)


def test_unknown_nested_key_is_named():
    with pytest.raises(ConfigError) as e:
        from_dict(PretrainConfig, {"model": {"layers": 1, "depth": 2}}, where="pretrain")
    assert "depth" in str(e.value)
    assert "pretrain.model" in str(e.value)


def test_wrong_type_is_named():
    with pytest.raises(ConfigError) as e:
        from_dict(PretrainConfig, {"steps": "ten"}, where="pretrain")
    assert "pretrain.steps" in str(e.value)
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("key,value", [
    ("steps", 2.5),        # float for an int
    ("steps", True),       # bool is not an int here
    ("lr", "1e-3"),        # string for a float
    ("lr", False),
    ("model", 3),          # scalar for a nested dataclass
])
def test_wrong_types_raise(key, value):
    with pytest.raises(ConfigError) as e:
        from_dict(PretrainConfig, {key: value}, where="pretrain")
    assert f"pretrain.{key}" in str(e.value)


def test_nested_wrong_type_is_named():
    with pytest.raises(ConfigError) as e:
        from_dict(PretrainConfig, {"model": {"heads": "two"}}, where="pretrain")
    assert "pretrain.model.heads" in str(e.value)


def test_nested_model_dict_builds_toy_config():
    cfg = from_dict(PretrainConfig, {"steps": 10, "lr": 1, "model": {"layers": 1, "heads": 2, "head_dim": 8}})
    assert isinstance(cfg.model, ToyModelConfig)
    assert cfg.model == ToyModelConfig(layers=1, heads=2, head_dim=8)
    assert cfg.steps == 10
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)  # int accepted for a float, coerced
    assert cfg.batch_size == PretrainConfig().batch_size  # untouched defaults


def test_tuple_field_from_list():
    spec = from_dict(LoraSpec, {"rank": 4, "target_modules": ["to_q", "to_v"]}, where="lora")
    assert spec.target_modules == ("to_q", "to_v")
    assert isinstance(spec.target_modules, tuple)
    with pytest.raises(ConfigError) as e:
        from_dict(LoraSpec, {"target_modules": ["to_q", 3]}, where="lora")
    assert "lora.target_modules[1]" in str(e.value)
    with pytest.raises(ConfigError):
        from_dict(LoraSpec, {"target_modules": "to_q"}, where="lora")


def test_parse_json_arg():
    assert parse_json_arg('{"steps": 3}', "x") == {"steps": 3}
    assert parse_json_arg("", "x") == {}
    with pytest.raises(ConfigError):
        parse_json_arg("{not json", "x")
    with pytest.raises(ConfigError):
        parse_json_arg("[1, 2]", "x")


# -- io ----------------------------------------------------------------------------------------------


def test_write_json_atomic_round_trip(tmp_path):
    obj = {"a": 1, "b": [1.5, "x", None], "c": {"d": True}}
    path = tmp_path / "out" / "result.json"
    write_json(path, obj)
    assert read_json(path) == obj
    assert json.loads(path.read_text()) == obj
    assert os.listdir(path.parent) == ["result.json"]  # no temporary files left behind
    # overwrite
    write_json(path, {"a": 2})
    assert read_json(path) == {"a": 2}
    assert os.listdir(path.parent) == ["result.json"]


def test_write_json_serialises_tensors_and_paths(tmp_path):
    import numpy as np
    import torch

    write_json(tmp_path / "t.json", {"t": torch.tensor([1, 2]), "n": np.array([[0.5]]), "p": tmp_path})
    assert read_json(tmp_path / "t.json") == {"t": [1, 2], "n": [[0.5]], "p": str(tmp_path)}


def test_write_json_failure_leaves_old_file(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert read_json(path) == {"ok": 1}
    assert os.listdir(tmp_path) == ["r.json"]


def test_atomic_path_failure_writes_nothing(tmp_path):
    path = tmp_path / "f.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("crash")
    assert not path.exists()
    assert os.listdir(tmp_path) == []


def test_atomic_dir_replaces_existing(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_dir(target) as tmp:
        assert tmp != target and tmp.parent == tmp_path
        (tmp / "new.txt").write_text("new")
        assert (target / "old.txt").exists()  # untouched until success
    assert sorted(os.listdir(target)) == ["new.txt"]
    assert (target / "new.txt").read_text() == "new"
    assert os.listdir(tmp_path) == ["model"]  # no temp or .old folder left


def test_atomic_dir_creates_new(tmp_path):
    target = tmp_path / "sub" / "fresh"
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("1")
    assert (target / "x").read_text() == "1"
    assert os.listdir(tmp_path / "sub") == ["fresh"]


def test_atomic_dir_failure_keeps_old(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("crash")
    assert sorted(os.listdir(target)) == ["old.txt"]
    assert os.listdir(tmp_path) == ["model"]


def test_jsonl_skips_partial_last_line(tmp_path):
    path = tmp_path / "log.jsonl"
    append_jsonl(path, {"step": 1})
    append_jsonl(path, {"step": 2})
    with open(path, "a") as fh:
        fh.write('{"step": 3, "lo')  # a crash mid-write
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]


def test_redact_hides_secret_looking_values():
    from tafs.config import redact

    cfg = {"reward_models": {"unifiedreward": {"endpoint": "http://h:8000/v1", "api_key": "sk-1", "token": None}},
           "hub": {"HF_TOKEN": "hf_x"}, "lr": 3e-4, "list": [{"password": "p"}]}
    out = redact(cfg)
    assert out["reward_models"]["unifiedreward"] == {"endpoint": "http://h:8000/v1", "api_key": "***", "token": None}
    assert out["hub"]["HF_TOKEN"] == "***" and out["list"] == [{"password": "***"}] and out["lr"] == 3e-4
    assert cfg["reward_models"]["unifiedreward"]["api_key"] == "sk-1"  # the input is not changed
