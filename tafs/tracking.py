"""Ingest a finished ``results/`` folder into MLflow, idempotently.

One MLflow experiment per effective config (``tafs-<config hash>``); inside it one MLflow run per
stage instance (config, pretrain, scorer, each train run, each evaluation, the report), each carrying
a stable ``tafs.key`` tag and a ``tafs.fingerprint`` tag (a hash of its source files). Re-ingesting
skips runs whose sources are unchanged and deletes + re-creates those whose sources changed, so the
MLflow view always mirrors ``results/`` without duplicates.

Only one process may ingest at a time: the pipeline runs this from a single local rule because
SQLite is unsafe with concurrent writers (and on cluster file systems).

Usage::

    python -m tafs.tracking --results results --uri sqlite:///results/mlflow.db \\
        --config config.json --out results/mlflow/ingest.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tafs.io import read_json, read_jsonl, write_json

if TYPE_CHECKING:  # mlflow is imported lazily: `import mlflow` costs ~1.5 s
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

log = logging.getLogger("tafs.tracking")

# Bump when the mapping from result files to MLflow runs changes: every fingerprint changes with it,
# so the next ingest re-creates all runs in the new shape instead of skipping them.
INGEST_VERSION = "1"

# MLflow's documented limits (mlflow.utils.validation); restated so we do not import private names.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_KEY_LENGTH = 250

_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")  # run / sampler names; no leading dot (temp dirs)
_SEED = re.compile(r"seed(\d+)")
_NFE = re.compile(r"nfe(\d+)")
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- ]")


# --------------------------------------------------------------------------------------------
# What one MLflow run holds
# --------------------------------------------------------------------------------------------


@dataclass
class Payload:
    """Everything logged into one MLflow run (built only when the run must be (re)created)."""

    params: dict[str, str] = field(default_factory=dict)
    metrics: list[tuple[str, float, int]] = field(default_factory=list)  # (key, value, step)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: list[tuple[Path, str | None]] = field(default_factory=list)  # (file, artifact dir)
    start_ms: int | None = None
    end_ms: int | None = None


@dataclass
class Stage:
    """One stage instance found in ``results/``: its identity, its sources and how to build it."""

    key: str  # stable identity, also the MLflow run name, e.g. "train/tafs_grpo/seed0"
    rule: str  # Snakemake rule it came from: config, pretrain, scorer, train, eval_base, eval_run, report
    sources: list[Path]  # files whose contents define the fingerprint
    build: Callable[[Path], Payload]  # called with a scratch folder for generated artifacts
    tags: dict[str, str] = field(default_factory=dict)  # identity tags (wildcards), known without reading
    extra_fingerprint: str = ""  # content that is not a file (the config run's canonical JSON)


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def canonical_json(obj: Any) -> str:
    """Key-sorted, whitespace-free JSON: equal configs give equal strings whatever their file layout."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def config_hash(config: dict[str, Any]) -> str:
    """Full sha256 hex digest of the canonical JSON of ``config``."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def experiment_name(config: dict[str, Any]) -> str:
    return f"tafs-{config_hash(config)[:10]}"


def fingerprint(files: Iterable[Path], root: Path, extra: str = "") -> str:
    """sha256 over the ingest version, ``extra`` and each file's path (relative to root) and bytes."""
    h = hashlib.sha256(f"tafs-ingest-v{INGEST_VERSION}\0{extra}\0".encode())
    for f in sorted(files):
        h.update(_relpath(f, root).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def _relpath(path: Path, root: Path) -> str:
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


def _param_str(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str) if isinstance(v, (list, dict)) else str(v)
    return s[:MAX_PARAM_VAL_LENGTH]


def params_from(config: dict[str, Any]) -> dict[str, str]:
    """Flattened config as MLflow params: keys joined with '.', values stringified and truncated."""
    return {clean_key(k): _param_str(v) for k, v in flatten(config).items()}


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def numeric_leaves(obj: dict[str, Any], skip: Sequence[str] = ("config",)) -> dict[str, float]:
    """Numeric leaves of a metrics dict (nested keys joined with '/'), skipping ``skip`` subtrees."""
    flat = flatten({k: v for k, v in obj.items() if k not in skip}, sep="/")
    return {clean_key(k): float(v) for k, v in flat.items() if is_number(v)}


def scalar_infos(obj: dict[str, Any], skip: Sequence[str] = ("config",)) -> dict[str, str]:
    """Top-level non-numeric scalars (``resumed``, ``base_model``...), logged as params."""
    return {
        clean_key(k): _param_str(v)
        for k, v in obj.items()
        if k not in skip and (isinstance(v, (str, bool)) or v is None)
    }


def _mtime_ms(path: Path) -> int:
    return int(path.stat().st_mtime * 1000)


def _times(path: Path, wall_s: Any) -> tuple[int, int]:
    """(start, end) in ms: the file was written at the end of a stage that ran ``wall_s`` seconds."""
    end = _mtime_ms(path)
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


def _sorted_dirs(parent: Path, pattern: re.Pattern[str]) -> list[tuple[Path, re.Match[str]]]:
    """Child folders whose full name matches ``pattern``, in a stable order."""
    if not parent.is_dir():
        return []
    found = [(p, m) for p in parent.iterdir() if p.is_dir() and (m := pattern.fullmatch(p.name))]
    return sorted(found, key=lambda pm: _natural(pm[0].name))


def _natural(name: str) -> list[Any]:
    """Sort key with numbers compared as numbers: nfe2 < nfe10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


# --------------------------------------------------------------------------------------------
# Discovery: results/ -> stages
# --------------------------------------------------------------------------------------------


def config_stage(config: dict[str, Any]) -> Stage:
    """The effective config as a run: full config as params and as a ``config.json`` artifact.

    A run rather than an experiment tag because tag values are capped (20 000 chars for experiment
    tags) and a run shows the config both as searchable params and as a downloadable file.
    """

    def build(scratch: Path) -> Payload:
        tmp = scratch / "config.json"
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
        return Payload(params=params_from(config), artifacts=[(tmp, None)])

    return Stage("config", "config", [], build, extra_fingerprint=canonical_json(config))


def json_stage(key: str, rule: str, path: Path) -> Stage:
    """A stage that wrote one flat-ish metrics JSON (pretraining, the learned scorer)."""

    def build(_scratch: Path) -> Payload:
        data = read_json(path)
        config = data.get("config") if isinstance(data.get("config"), dict) else {}
        params = {**scalar_infos(data), **params_from(config)}
        metrics = [(k, v, 0) for k, v in numeric_leaves(data).items()]
        metrics += [
            (clean_key(k), float(x), i)
            for k, v in data.items()
            if k != "config" and isinstance(v, list) and all(is_number(x) for x in v)
            for i, x in enumerate(v)
        ]
        start, end = _times(path, data.get("wall_s"))
        return Payload(params=params, metrics=metrics, artifacts=[(path, None)], start_ms=start, end_ms=end)

    return Stage(key, rule, [path], build)


def training_curves(rows: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Per-iteration numeric fields; a repeated iteration (a resumed run) keeps its last row."""
    by_iter: dict[int, dict[str, float]] = {}
    for row in rows:
        it = row.get("iteration")
        if not is_number(it):
            continue
        by_iter[int(it)] = {clean_key(k): float(v) for k, v in row.items() if k != "iteration" and is_number(v)}
    return by_iter


def train_stage(run: str, seed: int, folder: Path) -> Stage:
    summary = folder / "train_summary.json"
    curves = folder / "metrics.jsonl"

    def build(_scratch: Path) -> Payload:
        data = read_json(summary)
        config = data.get("config") if isinstance(data.get("config"), dict) else {}
        by_iter = training_curves(read_jsonl(curves)) if curves.exists() else {}
        metrics = [(k, v, it) for it, row in sorted(by_iter.items()) for k, v in row.items()]
        curve_keys = {k for row in by_iter.values() for k in row}
        # A final value whose name is also a curve (nfe_old...) would splice into that curve's history.
        for k, v in numeric_leaves(data).items():
            metrics.append((f"summary/{k}" if k in curve_keys else k, v, 0))
        params = {**scalar_infos(data), **params_from(config)}
        start, end = _times(summary, data.get("wall_s"))
        artifacts = [(p, None) for p in (summary, curves) if p.exists()]
        return Payload(params=params, metrics=metrics, artifacts=artifacts, start_ms=start, end_ms=end)

    key = f"train/{run}/seed{seed}"
    sources = [p for p in (summary, curves) if p.exists()]
    return Stage(key, "train", sources, build, tags={"method": run, "seed": str(seed)})


def eval_metrics(data: dict[str, Any]) -> list[tuple[str, float, int]]:
    """``<m>``, ``<m>_ci95``, ``<m>/<cat>``, ``<m>/<cat>_ci95``, ``chance/<m>``, ``n``, ``wall_s``."""
    out: dict[str, float] = {}
    for name, m in (data.get("metrics") or {}).items():
        if not isinstance(m, dict):
            continue
        name = clean_key(name)
        if is_number(m.get("mean")):
            out[name] = float(m["mean"])
        if is_number(m.get("ci95")):
            out[f"{name}_ci95"] = float(m["ci95"])
        for cat, c in (m.get("by_category") or {}).items():
            if isinstance(c, dict) and is_number(c.get("mean")):
                out[clean_key(f"{name}/{cat}")] = float(c["mean"])
                if is_number(c.get("ci95")):
                    out[clean_key(f"{name}/{cat}_ci95")] = float(c["ci95"])
    for name, v in (data.get("chance") or {}).items():
        if is_number(v):
            out[clean_key(f"chance/{name}")] = float(v)
    for name in ("n", "wall_s"):
        if is_number(data.get(name)):
            out[name] = float(data[name])
    return [(k, v, 0) for k, v in out.items()]


def eval_stage(key: str, rule: str, folder: Path, tags: dict[str, str]) -> Stage:
    path = folder / "metrics.json"
    grid = folder / "grid.png"

    def build(_scratch: Path) -> Payload:
        data = read_json(path)
        config = data.get("config") if isinstance(data.get("config"), dict) else {}
        params = params_from(config)
        params.update({k: _param_str(data[k]) for k in ("sampler", "nfe", "model") if k in data})
        start, end = _times(path, data.get("wall_s"))
        artifacts = [(p, None) for p in (grid, path) if p.exists()]
        return Payload(
            params=params,
            metrics=eval_metrics(data),
            tags={"model": str(data.get("model", ""))[:MAX_TAG_VAL_LENGTH]},
            artifacts=artifacts,
            start_ms=start,
            end_ms=end,
        )

    sources = [p for p in (path, grid) if p.exists()]
    return Stage(key, rule, sources, build, tags=tags)


def report_stage(results: Path) -> Stage | None:
    """Tables, figures and report.html as artifacts of one ``report`` run (None when none exist)."""
    files: list[tuple[Path, str | None]] = []
    for sub in ("tables", "figures"):
        folder = results / sub
        if folder.is_dir():
            for f in sorted(folder.rglob("*")):
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(folder).parts):
                    rel_dir = f.relative_to(results).parent.as_posix()
                    files.append((f, rel_dir))
    if (results / "report.html").is_file():
        files.append((results / "report.html", None))
    if not files:
        return None

    def build(_scratch: Path) -> Payload:
        end = max(_mtime_ms(f) for f, _ in files)
        return Payload(artifacts=files, start_ms=end, end_ms=end)

    return Stage("report", "report", [f for f, _ in files], build)


def discover(results: Path, config: dict[str, Any]) -> list[Stage]:
    """All stage instances present in ``results/``, in pipeline order."""
    stages = [config_stage(config)]
    for key, rule, path in (
        ("pretrain", "pretrain", results / "models" / "base" / "pretrain_metrics.json"),
        ("scorer", "scorer", results / "models" / "clip_scorer" / "scorer_metrics.json"),
    ):
        if path.is_file():
            stages.append(json_stage(key, rule, path))

    for run_dir, _ in _sorted_dirs(results / "runs", _NAME):
        for seed_dir, m in _sorted_dirs(run_dir, _SEED):
            if (seed_dir / "train_summary.json").is_file():
                stages.append(train_stage(run_dir.name, int(m.group(1)), seed_dir))

    for sampler_dir, _ in _sorted_dirs(results / "eval" / "base", _NAME):
        for nfe_dir, m in _sorted_dirs(sampler_dir, _NFE):
            if (nfe_dir / "metrics.json").is_file():
                tags = {"sampler": sampler_dir.name, "nfe": m.group(1)}
                key = f"eval/base/{sampler_dir.name}/nfe{m.group(1)}"
                stages.append(eval_stage(key, "eval_base", nfe_dir, tags))

    for run_dir, _ in _sorted_dirs(results / "eval" / "runs", _NAME):
        for seed_dir, sm in _sorted_dirs(run_dir, _SEED):
            for sampler_dir, _ in _sorted_dirs(seed_dir, _NAME):
                for nfe_dir, m in _sorted_dirs(sampler_dir, _NFE):
                    if (nfe_dir / "metrics.json").is_file():
                        seed = sm.group(1)
                        tags = {"method": run_dir.name, "seed": seed, "sampler": sampler_dir.name, "nfe": m.group(1)}
                        key = f"eval/{run_dir.name}/seed{seed}/{sampler_dir.name}/nfe{m.group(1)}"
                        stages.append(eval_stage(key, "eval_run", nfe_dir, tags))

    report = report_stage(results)
    if report is not None:
        stages.append(report)
    return stages


# --------------------------------------------------------------------------------------------
# Writing to MLflow
# --------------------------------------------------------------------------------------------


def ensure_sqlite_parent(uri: str) -> None:
    """SQLite will not create the database's folder; do it (``sqlite:///rel`` or ``sqlite:////abs``)."""
    if uri.startswith("sqlite:///"):
        db = uri[len("sqlite:///") :].split("?", 1)[0]
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)


@contextmanager
def fast_sqlite() -> Iterator[None]:
    """While ingesting, open SQLite connections with ``PRAGMA synchronous=OFF``.

    MLflow commits several times per logged batch; with the default fsync per commit a full toy grid
    spends most of its time waiting on the disk. Without the fsyncs a crash of the *process* still
    cannot corrupt the database (the rollback journal is written as usual); only an OS crash or power
    loss mid-ingest could, and mlflow.db is derived data that a re-ingest rebuilds. The journal mode
    is left alone: WAL is unsafe on the network file systems a cluster's results/ may live on.
    """
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        if isinstance(dbapi_conn, sqlite3.Connection):
            dbapi_conn.execute("PRAGMA synchronous=OFF")

    event.listen(Engine, "connect", on_connect)
    try:
        yield
    finally:
        event.remove(Engine, "connect", on_connect)


def get_experiment(client: MlflowClient, name: str, artifact_root: Path, tags: dict[str, str]) -> str:
    """Id of experiment ``name``, created (artifacts under ``artifact_root``) or restored as needed."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        artifact_root.mkdir(parents=True, exist_ok=True)
        exp_id = client.create_experiment(name, artifact_location=artifact_root.resolve().as_uri(), tags=tags)
    else:
        exp_id = exp.experiment_id
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp_id)
        for k, v in tags.items():
            if exp.tags.get(k) != v:
                client.set_experiment_tag(exp_id, k, v)
    return exp_id


def existing_runs(client: MlflowClient, exp_id: str) -> dict[str, list[Any]]:
    """Active runs of the experiment grouped by ``tafs.key`` (runs without one are not ours)."""
    from mlflow.entities import ViewType

    by_key: dict[str, list[Any]] = {}
    token = None
    while True:
        page = client.search_runs(
            [exp_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=50000, page_token=token
        )
        for run in page:
            key = run.data.tags.get("tafs.key")
            if key is not None:
                by_key.setdefault(key, []).append(run)
        token = page.token
        if not token:
            return by_key


def batches(
    params: dict[str, str], metrics: list[tuple[str, float, int]], tags: dict[str, str], timestamp: int
) -> Iterator[tuple[list[Metric], list[Param], list[RunTag]]]:
    """Split into ``log_batch`` calls within MLflow's limits (params+tags <= 100, all <= 1000)."""
    from mlflow.entities import Metric, Param, RunTag

    kv: list[Param | RunTag] = [Param(k, v) for k, v in params.items()]
    kv += [RunTag(k, v) for k, v in tags.items()]
    ms = [Metric(k, v, timestamp, step) for k, v, step in metrics]
    i = j = 0
    while i < len(kv) or j < len(ms):
        kv_chunk = kv[i : i + MAX_PARAMS_TAGS_PER_BATCH]
        m_chunk = ms[j : j + min(MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH - len(kv_chunk))]
        i += len(kv_chunk)
        j += len(m_chunk)
        yield (
            m_chunk,
            [p for p in kv_chunk if isinstance(p, Param)],
            [t for t in kv_chunk if isinstance(t, RunTag)],
        )


def create_run(client: MlflowClient, exp_id: str, stage: Stage, fp: str, common_tags: dict[str, str]) -> str:
    """Create, fill and finish one run; returns its id.

    The fingerprint tag is written last, just before FINISHED, so a run interrupted halfway is never
    mistaken for a complete one by the next ingest (which replaces it).
    """
    with tempfile.TemporaryDirectory(prefix="tafs-ingest-") as scratch:
        return _create_run(client, exp_id, stage, stage.build(Path(scratch)), fp, common_tags)


def _create_run(
    client: MlflowClient, exp_id: str, stage: Stage, payload: Payload, fp: str, common_tags: dict[str, str]
) -> str:
    now = int(time.time() * 1000)
    end = payload.end_ms or now
    tags = {**common_tags, **stage.tags, **payload.tags, "rule": stage.rule, "tafs.key": stage.key}
    tags = {k: v[:MAX_TAG_VAL_LENGTH] for k, v in tags.items()}
    run = client.create_run(exp_id, start_time=payload.start_ms or end, tags=tags, run_name=stage.key)
    run_id = run.info.run_id
    try:
        for metrics, params, batch_tags in batches(payload.params, payload.metrics, {}, end):
            client.log_batch(run_id, metrics=metrics, params=params, tags=batch_tags, synchronous=True)
        for path, artifact_dir in payload.artifacts:
            client.log_artifact(run_id, str(path), artifact_dir)
        client.set_tag(run_id, "tafs.fingerprint", fp, synchronous=True)
        client.set_terminated(run_id, "FINISHED", end_time=max(end, payload.start_ms or end))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    return run_id


def ingest(
    results: str | os.PathLike,
    uri: str,
    config: dict[str, Any],
    *,
    progress: bool = True,
    repo: Path | None = None,
) -> dict[str, Any]:
    """Mirror ``results`` into experiment ``tafs-<config hash>`` at ``uri``; returns the counts.

    Runs whose ``tafs.key`` exists with the same fingerprint are skipped; those whose sources changed
    (or that never finished) are deleted and re-created; duplicates of a key are deleted. Runs whose
    result files are gone are kept and listed as ``stale``.
    """
    from mlflow.tracking import MlflowClient

    results = Path(results)
    if not results.is_dir():
        raise FileNotFoundError(f"results folder not found: {results.resolve()}")
    t0 = time.perf_counter()
    ensure_sqlite_parent(uri)
    chash = config_hash(config)
    name = experiment_name(config)
    exp_tags = {
        "tafs.config_hash": chash,
        "tafs.results": str(results.resolve()),
        "mlflow.note.content": f"TAFS-GRPO pipeline results for config {chash[:10]} (see the 'config' run).",
    }
    common = {"git_commit": git_commit(repo)}
    common["mlflow.source.git.commit"] = common["git_commit"]
    stages = discover(results, config)
    with fast_sqlite():
        client = MlflowClient(tracking_uri=uri)
        exp_id = get_experiment(client, name, results / "mlflow" / "artifacts", exp_tags)
        counts, stale = sync_runs(client, exp_id, stages, results, common, progress)
        total = sum(len(runs) for runs in existing_runs(client, exp_id).values())
    summary = {
        **counts,
        "stale": stale,
        "total_runs": total,
        "stages": len(stages),
        "experiment_id": exp_id,
        "experiment_name": name,
        "config_hash": chash,
        "tracking_uri": uri,
        "wall_s": round(time.perf_counter() - t0, 3),
    }
    log.info(
        "mlflow-ingest %s: %d created, %d replaced, %d skipped, %d runs in total (%.1f s)",
        name, counts["created"], counts["replaced"], counts["skipped"], total, summary["wall_s"],
    )
    return summary


def sync_runs(
    client: MlflowClient,
    exp_id: str,
    stages: list[Stage],
    results: Path,
    common_tags: dict[str, str],
    progress: bool,
) -> tuple[dict[str, int], list[str]]:
    """Skip, replace or create one run per stage; returns the counts and the stale keys."""
    from tqdm import tqdm

    have = existing_runs(client, exp_id)
    counts = {"created": 0, "skipped": 0, "replaced": 0}
    for stage in tqdm(stages, desc="mlflow-ingest", unit="run", disable=not progress):
        fp = fingerprint(stage.sources, results, stage.extra_fingerprint)
        old = have.pop(stage.key, [])
        keep = next(
            (r for r in old if r.data.tags.get("tafs.fingerprint") == fp and r.info.status == "FINISHED"), None
        )
        for r in old:
            if r is not keep:
                client.delete_run(r.info.run_id)
        if keep is not None:
            counts["skipped"] += 1
            continue
        create_run(client, exp_id, stage, fp, common_tags)
        counts["replaced" if old else "created"] += 1
    return counts, sorted(have)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tafs mlflow-ingest", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", required=True, help="finished results folder")
    p.add_argument("--uri", required=True, help="MLflow tracking URI, e.g. sqlite:///results/mlflow.db")
    p.add_argument("--config", required=True, help="effective Snakemake config as a JSON file")
    p.add_argument("--out", required=True, help="ingest summary JSON to write")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # The ingest runs on cluster login/compute nodes that may have no network: keep MLflow from phoning home.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    config_path = Path(a.config)
    if not config_path.is_file():
        raise SystemExit(f"mlflow-ingest: config JSON not found: {config_path.resolve()}")
    try:
        summary = ingest(a.results, a.uri, read_json(config_path), progress=not a.no_progress)
    except FileNotFoundError as e:
        raise SystemExit(f"mlflow-ingest: {e}") from e
    write_json(a.out, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
