"""Mirror stages into an experiment: skip what is there, complete what a live job left open, create the rest.

Used by the end-of-DAG ingest (every stage of a results folder) and by jobs that log to a tracking server
while they run (their own stages). A run is identified by its ``tafs.key`` tag and is complete when it carries
the ``tafs.fingerprint`` of its source files:

- a complete run with the same fingerprint is kept (its name and parent are brought up to date);
- a live run (``tafs.live``, opened by a training job) without a fingerprint is completed: the curve points it
  missed (the server was down, the job was killed), the final metrics, the artifacts, the fingerprint;
- anything else under the key (a run of older sources, an interrupted ingest, a duplicate) is deleted and
  the run is created anew, nested under its parent's run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tafs.tracking.payload import Stage, fingerprint
from tafs.tracking.store import create_run, existing_runs, finish_run

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

LIVE_TAG = "tafs.live"
STEP_KEY = "time_iter_s"  # in every row of a training curve: which iterations a live run already has


def _complete(run: Any) -> str | None:
    return run.data.tags.get("tafs.fingerprint") if run.info.status == "FINISHED" else None


def complete_live_run(client: MlflowClient, run: Any, stage: Stage, fp: str) -> str:
    """Fill in what a live run lacks and finish it."""
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory(prefix="tafs-sync-") as scratch:
        payload = stage.build(Path(scratch))
        logged = {m.step for m in client.get_metric_history(run_id, STEP_KEY)} if payload.curves else set()
        for k, v in payload.tags.items():
            client.set_tag(run_id, k, v)
        finish_run(client, run_id, payload, fp, skip_params=set(run.data.params), skip_steps=logged)
    return run_id


def sync_stages(client: MlflowClient, exp_id: str, stages: list[Stage], root: Path, common_tags: dict[str, str],
                progress: bool = False) -> tuple[dict[str, int], list[str]]:
    """One complete run per stage, parents before children; returns the counts and the keys of runs whose
    sources are gone (kept, listed as stale)."""
    from tqdm import tqdm

    have = existing_runs(client, exp_id)
    ids = {key: (next((r for r in runs if _complete(r)), runs[0])).info.run_id for key, runs in have.items()}
    counts = {"created": 0, "skipped": 0, "replaced": 0, "completed": 0}
    for stage in tqdm(stages, desc="mlflow", unit="run", disable=not progress):
        fp = fingerprint(stage.sources, root, stage.extra_fingerprint)
        old = have.pop(stage.key, [])
        keep = next((r for r in old if _complete(r) == fp), None)
        live = None if keep else next((r for r in old if r.data.tags.get(LIVE_TAG) and not _complete(r)), None)
        for r in old:
            if r is not keep and r is not live:
                client.delete_run(r.info.run_id)
        parent_id = ids.get(stage.parent) if stage.parent else None
        if keep is not None:
            ids[stage.key] = keep.info.run_id
            _update_identity(client, keep, stage, parent_id)
            counts["skipped"] += 1
        elif live is not None:
            ids[stage.key] = complete_live_run(client, live, stage, fp)
            _update_identity(client, live, stage, parent_id)
            counts["completed"] += 1
        else:
            ids[stage.key] = create_run(client, exp_id, stage, fp, common_tags, parent_id)
            counts["replaced" if old else "created"] += 1
    return counts, sorted(have)


def _update_identity(client: MlflowClient, run: Any, stage: Stage, parent_id: str | None) -> None:
    """A kept run follows its stage's name and parent (e.g. a parent created after it, labels written later)."""
    tags = run.data.tags
    if parent_id and tags.get("mlflow.parentRunId") != parent_id:
        client.set_tag(run.info.run_id, "mlflow.parentRunId", parent_id)
    if stage.name and tags.get("mlflow.runName") != stage.name:
        client.set_tag(run.info.run_id, "mlflow.runName", stage.name)
