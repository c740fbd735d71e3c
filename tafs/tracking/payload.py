"""What one MLflow run holds (``Payload``), one stage instance found in ``results/`` (``Stage``), and the
helpers that turn result files into MLflow params, metrics and tags."""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tafs.hashing import config_hash, files_hash

# Bump when the mapping from result files to MLflow runs changes: every fingerprint changes with it,
# so the next ingest re-creates all runs in the new shape instead of skipping them.
INGEST_VERSION = "2"

MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_KEY_LENGTH = 250
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- ]")


@dataclass
class Payload:
    """Everything logged into one MLflow run (built only when the run must be (re)created)."""

    params: dict[str, str] = field(default_factory=dict)
    metrics: list[tuple[str, float, int]] = field(default_factory=list)  # (key, value, step)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: list[tuple[Path, str | None]] = field(default_factory=list)  # (file, artifact dir)
    start_ms: int | None = None
    end_ms: int | None = None
    curves: set[str] = field(default_factory=set)  # metric keys logged per step (a training run's curves)


@dataclass
class Stage:
    """One stage instance found in ``results/``: its identity, its sources and how to build it."""

    key: str  # stable identity, also the MLflow run name, e.g. "train/tafs_grpo/seed0"
    rule: str  # Snakemake rule it came from: config, model, build_model, train, eval_base, eval_run, report
    sources: list[Path]  # files whose contents define the fingerprint
    build: Callable[[Path], Payload]  # called with a scratch folder for generated artifacts
    tags: dict[str, str] = field(default_factory=dict)  # identity tags (wildcards), known without reading
    extra_fingerprint: str = ""  # content that is not a file (the config run's canonical JSON)
    parent: str | None = None  # key of the run it is nested under (a model's run holds its evaluations)
    name: str | None = None  # the run name the UI shows (default: the key)


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def experiment_name(config: dict[str, Any]) -> str:
    """``<task>/<experiment> [<hash>]``: the task and the config that made it (config ``experiment``, which the
    Snakefile fills with the --configfile names), readable in the UI's list; the short config hash keeps two
    edits of one preset apart (the whole hash is the experiment's ``tafs.config_hash`` tag)."""
    label = config.get("experiment") or "config"
    return f"{config.get('task', 'task')}/{label} [{config_hash(config, 6)}]"


def fingerprint(files: Iterable[Path], root: Path, extra: str = "") -> str:
    """sha256 over the ingest version, ``extra`` and each file's path (relative to root) and bytes."""
    return files_hash({relpath(f, root): f for f in files}, f"tafs-ingest-v{INGEST_VERSION}\0{extra}")


def relpath(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


def clean_key(key: str) -> str:
    """Make ``key`` a valid MLflow param/metric name (no odd characters, no empty or '..' segments)."""
    key = _BAD_KEY_CHARS.sub("_", str(key))
    parts = [("__" if p == ".." else p) for p in key.split("/") if p not in ("", ".")]
    return "/".join(parts)[:MAX_KEY_LENGTH] or "_"


def flatten(obj: Any, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested dicts to one level, keys joined with ``sep``; lists and scalars are leaves."""
    if not isinstance(obj, dict):
        return {prefix: obj} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in obj.items():
        name = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, name, sep))
        else:
            out[name] = v
    return out


def param_str(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str) if isinstance(v, (list, dict)) else str(v)
    return s[:MAX_PARAM_VAL_LENGTH]


def params_from(config: dict[str, Any]) -> dict[str, str]:
    """Flattened config as MLflow params: keys joined with '.', values stringified and truncated."""
    return {clean_key(k): param_str(v) for k, v in flatten(config).items()}


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def numeric_leaves(obj: dict[str, Any], skip: Sequence[str] = ("config",)) -> dict[str, float]:
    """Numeric leaves of a metrics dict (nested keys joined with '/'), skipping ``skip`` subtrees."""
    flat = flatten({k: v for k, v in obj.items() if k not in skip}, sep="/")
    return {clean_key(k): float(v) for k, v in flat.items() if is_number(v)}


def scalar_infos(obj: dict[str, Any], skip: Sequence[str] = ("config",)) -> dict[str, str]:
    """Top-level non-numeric scalars (``resumed``, ``base_model``...), logged as params."""
    return {
        clean_key(k): param_str(v)
        for k, v in obj.items()
        if k not in skip and (isinstance(v, (str, bool)) or v is None)
    }


def mtime_ms(path: Path) -> int:
    return int(path.stat().st_mtime * 1000)


def stage_times(path: Path, wall_s: Any) -> tuple[int, int]:
    """(start, end) in ms: the file was written at the end of a stage that ran ``wall_s`` seconds."""
    end = mtime_ms(path)
    start = end - int(float(wall_s) * 1000) if is_number(wall_s) and math.isfinite(wall_s) else end
    return start, end


def git_commit(repo: Path | None = None) -> str:
    """HEAD of the checkout holding this package (or ``repo``); 'unknown' outside a git checkout."""
    repo = repo or Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def common_tags(repo: Path | None = None) -> dict[str, str]:
    """Tags of every run: the commit of the code that made the results."""
    commit = git_commit(repo)
    return {"git_commit": commit, "mlflow.source.git.commit": commit}
