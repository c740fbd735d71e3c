"""Ingest a finished ``results/`` folder into MLflow, idempotently.

One MLflow experiment per effective config (``tafs-<config hash>``); inside it one MLflow run per
stage instance (config, pretrain, scorer, each train run, each evaluation, the report), each carrying
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
from typing import TYPE_CHECKING, Any

from tafs.hashing import config_hash
from tafs.io import read_json, write_json
from tafs.tracking.payload import Stage, experiment_name, fingerprint, git_commit
from tafs.tracking.stages import discover
from tafs.tracking.store import create_run, ensure_sqlite_parent, existing_runs, fast_sqlite, get_experiment

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger("tafs.tracking")


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
