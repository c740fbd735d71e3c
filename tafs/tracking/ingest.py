"""Ingest a finished ``results/`` folder into MLflow, idempotently.

One MLflow experiment per effective config (``<task>/<config files> [<hash>]``); inside it one MLflow run per
stage instance (config, each model the DAG built, each train run, each evaluation, the report), each carrying
a stable ``tafs.key`` tag and a ``tafs.fingerprint`` tag (a hash of its source files). Re-ingesting
skips runs whose sources are unchanged and deletes + re-creates those whose sources changed, so the
MLflow view always mirrors ``results/`` without duplicates.

Only one process may ingest at a time: the pipeline runs this from a single local rule because
SQLite is unsafe with concurrent writers (and on cluster file systems).

Usage::

    python -m tafs mlflow-ingest --results results --uri sqlite:///results/mlflow.db \\
        --config results/config.json --out results/mlflow/ingest.json
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tafs.hashing import config_hash
from tafs.io import read_json, write_json
from tafs.tracking.payload import common_tags, experiment_name
from tafs.tracking.stages import discover
from tafs.tracking.store import ensure_sqlite_parent, existing_runs, fast_sqlite, get_experiment
from tafs.tracking.sync import sync_stages

log = logging.getLogger("tafs.tracking")


def ingest(
    results: str | os.PathLike,
    uri: str,
    config: dict[str, Any],
    *,
    progress: bool = True,
    repo: Path | None = None,
) -> dict[str, Any]:
    """Mirror ``results`` into experiment ``<task>/<config files> [<hash>]`` at ``uri``; returns the counts.

    Runs whose ``tafs.key`` exists with the same fingerprint are skipped; live runs that jobs left open are
    completed; those whose sources changed (or that never finished) are deleted and re-created; duplicates of a
    key are deleted. Runs whose result files are gone are kept and listed as ``stale`` (``tafs.tracking.sync``).
    """
    from mlflow.tracking import MlflowClient

    results = Path(results)
    if not results.is_dir():
        raise FileNotFoundError(f"results folder not found: {results.resolve()}")
    t0 = time.perf_counter()
    check_server(uri)
    ensure_sqlite_parent(uri)
    chash = config_hash(config)
    name = experiment_name(config)
    exp_tags = {
        "tafs.config_hash": chash,
        "tafs.results": str(results.resolve()),
        "mlflow.note.content": f"TAFS-GRPO pipeline results for config {chash[:10]} (see the 'config' run).",
    }
    common = common_tags(repo)
    stages = discover(results, config)
    with fast_sqlite():
        client = MlflowClient(tracking_uri=uri)
        local = not is_server(uri)  # a server keeps the artifacts where it is told to
        exp_id = get_experiment(client, name, results / "mlflow" / "artifacts" if local else None, exp_tags)
        counts, stale = sync_stages(client, exp_id, stages, results, common, progress)
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
        "ui_page": ui_page(exp_id),
        "wall_s": round(time.perf_counter() - t0, 3),
    }
    log.info(
        "mlflow-ingest %s: %d created, %d replaced, %d completed, %d skipped, %d runs in total (%.1f s)",
        name, counts["created"], counts["replaced"], counts["completed"], counts["skipped"], total, summary["wall_s"],
    )
    log.info("browse: %s", f"{uri.rstrip('/')}/{summary['ui_page']}" if not local else
             f"mlflow ui --backend-store-uri {uri} --port 5000, then http://127.0.0.1:5000/{summary['ui_page']}")
    return summary


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_server(uri: str, timeout_s: float = 10.0) -> None:
    """Fail in seconds, not after the MLflow client's minutes of retries, when a tracking server is down."""
    if not is_server(uri):
        return
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
            return
    except OSError as e:
        raise ConnectionError(
            f"MLflow server {uri} (config tracking.uri) is not reachable ({getattr(e, 'reason', e)}): start it "
            "(docs/cluster.md, 'Live curves'), then re-run the same command; only mlflow_ingest will run") from e


def ui_page(experiment_id: str) -> str:
    """The experiment's runs page in the MLflow UI. MLflow 3's UI opens experiments in its GenAI view unless the
    URL (or a click on "Model training", remembered by the browser) asks for the model-training one."""
    return f"#/experiments/{experiment_id}?workflowType=machine_learning"


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
        raise SystemExit(f"error: mlflow-ingest: config JSON not found: {config_path.resolve()}")
    try:
        summary = ingest(a.results, a.uri, read_json(config_path), progress=not a.no_progress)
    except (FileNotFoundError, ConnectionError) as e:
        raise SystemExit(f"error: mlflow-ingest: {e}") from e
    write_json(a.out, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
