"""Config dicts -> frozen dataclasses, with errors that name the offending key.

Snakemake validates ``config.yaml`` against ``workflow/schemas/config.schema.yaml`` before any job
runs; this is the second line of defence for anyone calling the CLI directly.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ``ConfigError``."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as e:  # a dataclass's own check (__post_init__): bad input, reported as such
        raise ConfigError(str(e)) from e


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = typing.get_args(tp)[0] if typing.get_args(tp) else Any
        items = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def parse_json_arg(text: str, where: str) -> dict[str, Any]:
    try:
        data = json.loads(text) if text else {}
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object")
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``override`` merged into ``base`` recursively (mappings merge, the rest replaces)."""
    out = dict(base)
    for k, v in (override or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# Sections a config replaces whole instead of merging into config.yaml's: the toy world's reward mixes name toy
# rewards, which a task of real models cannot train on (and YAML cannot delete a key).
REPLACED_SECTIONS = (("ablations", "reward_mixes"),)


def merge_defaults(defaults: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """``config`` deep-merged over the embedded default (config.yaml), as the Snakefile does, except that a
    section of ``REPLACED_SECTIONS`` the config sets replaces the default's (``ablations.reward_mixes``)."""
    out = deep_merge(defaults, config)
    for outer, inner in REPLACED_SECTIONS:
        given = (config or {}).get(outer)
        if isinstance(given, dict) and inner in given:
            out[outer] = {**out[outer], inner: given[inner]}
    return out


def load_config_file(path: str) -> dict[str, Any]:
    """A YAML (or JSON) config file as a mapping; an empty, unreadable or non-mapping file raises ConfigError
    naming the file (and the line of a syntax error)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: config file not found") from e
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise ConfigError(f"{where}: not valid YAML ({e.problem}); check the indentation and quoting there") from e
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    if data is None:
        raise ConfigError(f"{path}: the config file is empty; it must be a mapping of keys (see config.yaml)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys at the top level, got a "
                          f"{type(data).__name__}")
    return data


def schema_errors(config: dict[str, Any], schema_path: str) -> list[str]:
    """Every violation of the JSON schema, one line each: the config key (dotted path) and what is wrong."""
    import jsonschema
    import yaml

    with open(schema_path, encoding="utf-8") as fh:
        schema = yaml.safe_load(fh)
    validator = jsonschema.Draft202012Validator(schema)
    out = []
    for err in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        best = jsonschema.exceptions.best_match([err])
        key = ".".join(map(str, best.absolute_path)) or "(top level)"
        hint = best.schema.get("description") if best.validator in ("pattern", "enum") else None
        out.append(f"{key}: {best.message}" + (f" (expected {hint})" if hint else ""))
    return out


_SECRET_KEY = ("token", "api_key", "apikey", "secret", "password", "authorization")


def redact(obj: Any) -> Any:
    """A copy with the values of secret-looking keys (``*token*``, ``api_key``, ``*secret*``, ``password``...)
    replaced by ``"***"``: what goes into config.json, metrics.json, train_summary.json and MLflow."""
    if isinstance(obj, dict):
        return {k: "***" if any(s in str(k).lower() for s in _SECRET_KEY) and v is not None else redact(v)
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj
