"""Live tracking: jobs log to an MLflow tracking server while they run (config ``tracking.uri``).

A training job (its main process) opens its run at the start and logs the flattened config as params, every
iteration's metrics at ``step = iteration`` and the system metrics (CPU, memory, GPU); when it has written its
outputs it completes the run through ``tafs.tracking.sync`` (final metrics, artifacts, fingerprint). An
evaluation job records its runs when it finishes, nested under the model's run. The end-of-DAG ingest then adds
only what is missing.

A server that is down never fails a job: the job warns once, keeps training, tries again every
``RETRY_S`` seconds, and whatever it could not log (curve points, final metrics) is filled in by a later sync.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tafs.paths import Layout
from tafs.tracking.payload import clean_key, common_tags, is_number, params_from
from tafs.tracking.stages import Stage, labels_of, train_stage
from tafs.tracking.sync import LIVE_TAG, sync_stages

log = logging.getLogger("tafs.tracking")
RETRY_S = 30.0


@dataclass(frozen=True)
class Target:
    """Where a job logs: the server, the experiment (the DAG's ``<task>/<config files> [<hash>]``), the results root."""

    uri: str
    experiment: str
    results: str

    @classmethod
    def parse(cls, text: str | None) -> "Target | None":
        if not text:
            return None
        d = json.loads(text)
        return cls(d["uri"], d["experiment"], d["results"]) if d.get("uri") else None

    def client(self) -> Any:
        # A down server must cost seconds, not the client's default minutes of retries per call.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    def experiment_id(self, client: Any) -> str:
        from tafs.tracking.store import get_experiment

        return get_experiment(client, self.experiment, None, {"tafs.results": str(Path(self.results).resolve())})


def _warn(what: str, target: Target, error: BaseException) -> None:
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    log.warning("MLflow server %s: %s failed (%s); the job goes on, the DAG's ingest will record it",
                target.uri, what, first)


class LiveRun:
    """A training job's run on the server; every call is safe when the server is down."""

    def __init__(self, target: Target, stage: Stage, params: dict[str, Any]):
        self.target, self.stage, self.params = target, stage, params
        self.client = self.run_id = self.monitor = None
        self._retry_at = 0.0
        self._open()

    def _open(self) -> None:
        if time.time() < self._retry_at:
            return
        try:
            client = self.target.client()
            exp_id = self.target.experiment_id(client)
            runs = client.search_runs([exp_id], f"tags.`tafs.key` = '{self.stage.key}'")
            run = next((r for r in runs if r.data.tags.get(LIVE_TAG) and "tafs.fingerprint" not in r.data.tags),
                       None)  # a resumed job continues its run
            if run is None:
                tags = {**common_tags(), **self.stage.tags, "rule": self.stage.rule, "tafs.key": self.stage.key,
                        LIVE_TAG: "1"}
                run = client.create_run(exp_id, run_name=self.stage.name, tags=tags)
            else:
                client.update_run(run.info.run_id, status="RUNNING")
            known = set(run.data.params)
            params = {k: v for k, v in params_from(self.params).items() if k not in known}
            from tafs.tracking.store import batches

            for _, batch_params, _ in batches(params, [], {}, 0):
                client.log_batch(run.info.run_id, params=batch_params)
            self.client, self.run_id = client, run.info.run_id
            self._start_system_metrics()
        except Exception as e:  # noqa: BLE001 - never fail the job
            self._retry_at = time.time() + RETRY_S
            _warn(f"opening run {self.stage.key}", self.target, e)

    def _start_system_metrics(self) -> None:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self.monitor = SystemMetricsMonitor(self.run_id, sampling_interval=10, tracking_uri=self.target.uri)
            self.monitor.start()
        except Exception as e:  # noqa: BLE001 - system metrics are a bonus
            log.info("no system metrics for %s (%s)", self.stage.key, e)

    def log(self, row: dict[str, Any]) -> None:
        """One iteration's numbers at step = iteration."""
        if self.run_id is None:
            self._open()
            if self.run_id is None:
                return
        if time.time() < self._retry_at:
            return
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(row.get("iteration", 0))
        metrics = [Metric(clean_key(k), float(v), now, step) for k, v in row.items()
                   if k != "iteration" and is_number(v)]
        try:
            for i in range(0, len(metrics), 1000):
                self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])
        except Exception as e:  # noqa: BLE001
            self._retry_at = time.time() + RETRY_S
            _warn(f"logging iteration {step} of {self.stage.key}", self.target, e)

    def close(self) -> None:
        """Stop the system metrics; complete the run from the files the job wrote."""
        if self.monitor is not None:
            try:
                self.monitor.finish()
            except Exception:  # noqa: BLE001
                pass
        self._retry_at = 0.0
        sync_outputs(self.target, [self.stage])


def sync_outputs(target: Target, stages: list[Stage]) -> None:
    """Record a job's finished stages on the server (safe when it is down)."""
    try:
        client = target.client()
        sync_stages(client, target.experiment_id(client), stages, Path(target.results), common_tags())
    except Exception as e:  # noqa: BLE001
        _warn("recording " + ", ".join(s.key for s in stages), target, e)


def training_run(target: Target | None, out_dir: str | Path, config: dict[str, Any]) -> LiveRun | None:
    """The live run of the training job writing ``out_dir`` (``runs/<run>/seed<S>``), or None without a server."""
    if target is None:
        return None
    layout = Layout(target.results)
    rel = Path(out_dir).resolve().relative_to((layout.root / "runs").resolve()).parts
    run, seed = rel[0], int(rel[1].removeprefix("seed"))
    return LiveRun(target, train_stage(run, seed, Path(out_dir), labels_of(layout).get(run)), config)


def eval_outputs(target: Target | None, out_dir: str | Path) -> None:
    """Record the evaluations a job wrote under ``out_dir`` (and the model run they nest under, if it is not a
    training run)."""
    if target is None:
        return
    from tafs.tracking.stages import eval_entry_stage, model_stages

    layout = Layout(target.results)
    out = Path(out_dir).resolve()
    entries = [e for e in layout.finished_evals() if e.folder.resolve().is_relative_to(out)]
    labels = labels_of(layout)
    models = model_stages(layout, [e.model for e in entries], labels)
    sync_outputs(target, models + [eval_entry_stage(e, labels) for e in entries])
