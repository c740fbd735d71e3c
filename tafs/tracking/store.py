"""Writing to MLflow: the SQLite store, the experiment, batched logging within MLflow's limits, one run."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tafs.tracking.payload import MAX_TAG_VAL_LENGTH, Payload, Stage

if TYPE_CHECKING:  # mlflow is imported lazily: `import mlflow` costs ~1.5 s
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

# MLflow's documented limits (mlflow.utils.validation); restated so we do not import private names.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000


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


# Marks the experiment as model training. MLflow 3.17's UI still opens in its GenAI view unless the link asks for
# the model-training one (tafs.tracking.ingest.ui_page); other MLflow versions and clients read this tag.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def get_experiment(client: MlflowClient, name: str, artifact_root: Path | None, tags: dict[str, str]) -> str:
    """Id of experiment ``name``, created (artifacts under ``artifact_root``, or where a tracking server keeps
    them when None) or restored as needed; several jobs may ask at once."""
    from mlflow.exceptions import MlflowException

    tags = {**EXPERIMENT_KIND, **tags}
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None
        if artifact_root is not None:
            artifact_root.mkdir(parents=True, exist_ok=True)
            location = artifact_root.resolve().as_uri()
        try:
            return client.create_experiment(name, artifact_location=location, tags=tags)
        except MlflowException:  # another job created it first
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
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


def stage_tags(stage: Stage, common_tags: dict[str, str], payload: Payload | None = None,
               parent_id: str | None = None) -> dict[str, str]:
    tags = {**common_tags, **stage.tags, **(payload.tags if payload else {}), "rule": stage.rule,
            "tafs.key": stage.key}
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    return {k: v[:MAX_TAG_VAL_LENGTH] for k, v in tags.items()}


def create_run(client: MlflowClient, exp_id: str, stage: Stage, fp: str, common_tags: dict[str, str],
               parent_id: str | None = None) -> str:
    """Create, fill and finish one run (nested under ``parent_id``); returns its id.

    The fingerprint tag is written last, just before FINISHED, so a run interrupted halfway is never
    mistaken for a complete one by the next ingest (which replaces it).
    """
    with tempfile.TemporaryDirectory(prefix="tafs-ingest-") as scratch:
        payload = stage.build(Path(scratch))
        end = payload.end_ms or int(time.time() * 1000)
        run = client.create_run(exp_id, start_time=payload.start_ms or end, run_name=stage.name or stage.key,
                                tags=stage_tags(stage, common_tags, payload, parent_id))
        finish_run(client, run.info.run_id, payload, fp)
        return run.info.run_id


def finish_run(client: MlflowClient, run_id: str, payload: Payload, fp: str, skip_params: set[str] = frozenset(),
               skip_steps: set[int] = frozenset()) -> None:
    """Log ``payload`` into a run, then its fingerprint, then FINISHED. ``skip_params`` are already logged;
    curve points at ``skip_steps`` too (a live run completed after its job)."""
    end = payload.end_ms or int(time.time() * 1000)
    params = {k: v for k, v in payload.params.items() if k not in skip_params}
    metrics = [m for m in payload.metrics if not (m[0] in payload.curves and m[2] in skip_steps)]
    try:
        for batch_metrics, batch_params, batch_tags in batches(params, metrics, {}, end):
            client.log_batch(run_id, metrics=batch_metrics, params=batch_params, tags=batch_tags, synchronous=True)
        for path, artifact_dir in payload.artifacts:
            client.log_artifact(run_id, str(path), artifact_dir)
        client.set_tag(run_id, "tafs.fingerprint", fp, synchronous=True)
        client.set_terminated(run_id, "FINISHED", end_time=max(end, payload.start_ms or end))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise


