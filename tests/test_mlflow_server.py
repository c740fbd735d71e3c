"""Live tracking through a real ``mlflow server`` on 127.0.0.1 (SQLite backend in a temporary folder).

The small DAG runs with ``tracking.uri`` pointing at the server. Training metrics arrive while the training job
runs; the server is then stopped halfway: training still finishes (the job warns and goes on), the DAG's ingest
cannot reach the server and fails; with the server back, a re-run fills in what is missing. In the end every
stage is one run, nested under its model's run, with every iteration of the training curve.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from dag_utils import run_snakemake, scratch_workflow
from tafs.distributed import free_port

pytestmark = pytest.mark.slow
# Enough iterations that the outage (a SIGKILL, instant) lands while the job still trains: after the test sees two
# iterations, the rest take seconds even on a fast machine, against well under a second of polling.
ITERS = 30


def _start(db: Path, port: int, log: Path) -> subprocess.Popen:
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", f"sqlite:///{db}", "--artifacts-destination",
                             str(db.parent / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=open(log, "a"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    for _ in range(240):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"mlflow server did not start: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    os.killpg(proc.pid, sig)
    proc.wait(timeout=60)


def _train_run(client, exp_name: str):
    exp = client.get_experiment_by_name(exp_name)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], "tags.`tafs.key` = 'train/tafs_grpo/seed0'")
    return runs[0] if runs else None


def test_live_runs_survive_a_server_outage_and_the_ingest_fills_in(tmp_path):
    from mlflow.tracking import MlflowClient

    from tafs.config import redact
    from tafs.tracking.payload import experiment_name

    port, db, log = free_port(), tmp_path / "server" / "mlflow.db", tmp_path / "server.log"
    db.parent.mkdir()
    url = f"http://127.0.0.1:{port}"
    (tmp_path / "wf").mkdir()
    wf = scratch_workflow(tmp_path / "wf")
    cfg = {"results": "results", "report": False, "seeds": [0], "scorer": {"steps": 10}, "tracking": {"uri": url},
           "train": {"iterations": ITERS, "prompts_per_iter": 2, "group_size": 2, "checkpoint_every": 1,
                     "lora": {"rank": 4, "alpha": 8}},
           "eval": {"per_category": 1, "batch_size": 32},
           "sweep": {"base_nfe": [4], "base_samplers": ["ode"], "run_nfe": [4], "run_samplers": None},
           "tables": {"comparison": ["tafs_grpo"], "components": ["tafs_grpo"], "extra": [], "ablation_of": None,
                      "main_nfe": 4, "table1_nfe": [4], "base_rows": [["ode", 4]],
                      "table1": {"task": "toy_preference"}}}  # one task: no toy_composition run
    (wf / "live.yaml").write_text(yaml.safe_dump(cfg))
    server = _start(db, port, log)
    client = MlflowClient(tracking_uri=url)
    dag = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "live.yaml"], cwd=wf,
                           stdout=open(tmp_path / "dag1.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    # the experiment's name, as the ingest will compute it from results/config.json
    deadline, seen = time.time() + 600, []
    while time.time() < deadline and dag.poll() is None:
        if (wf / "results/config.json").is_file():
            run = _train_run(client, experiment_name(json.loads((wf / "results/config.json").read_text())))
            if run is not None:
                seen = client.get_metric_history(run.info.run_id, "loss")
                if len(seen) >= 2:
                    break
        time.sleep(0.2)
    assert len(seen) >= 2, (tmp_path / "dag1.log").read_text()[-3000:]
    _stop(server, signal.SIGKILL)  # a crash halfway through training: no graceful drain of in-flight requests
    assert dag.wait(timeout=900) != 0  # training and evaluation go on; only the final ingest needs the server
    summary = wf / "results/runs/tafs_grpo/seed0/train_summary.json"
    assert json.loads(summary.read_text())["iterations"] == ITERS
    job_end_ms = summary.stat().st_mtime * 1000
    assert all(m.timestamp < job_end_ms for m in seen)  # these arrived while the job ran
    assert "MLflow server" in (wf / "results/logs/train/tafs_grpo_seed0.log").read_text()  # it warned
    assert "is not reachable" in (tmp_path / "dag1.log").read_text()  # the ingest says why, on the console

    server = _start(db, port, log)
    try:
        res = run_snakemake(wf, "--cores", "2", "--configfile", "live.yaml")
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
        ingest = json.loads((wf / "results/mlflow/ingest.json").read_text())
        exp = client.get_experiment_by_name(ingest["experiment_name"])
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        keys = [r.data.tags["tafs.key"] for r in runs]
        assert len(keys) == len(set(keys)) == ingest["total_runs"]  # one run per stage, no duplicate
        by_key = {r.data.tags["tafs.key"]: r for r in runs}
        train = by_key["train/tafs_grpo/seed0"]
        assert train.info.status == "FINISHED" and "tafs.fingerprint" in train.data.tags
        steps = sorted(m.step for m in client.get_metric_history(train.info.run_id, "loss"))
        assert steps == list(range(ITERS))  # the iterations logged live plus those filled in, once each
        ev = by_key["eval/runs/tafs_grpo/seed0/annealed/nfe4"]
        assert ev.data.tags["mlflow.parentRunId"] == train.info.run_id
        assert by_key["eval/base/ode/nfe4"].data.tags["mlflow.parentRunId"] == by_key["model/base"].info.run_id
        assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
        assert experiment_name(redact(json.loads((wf / "results/config.json").read_text()))) == exp.name
        again = subprocess.run([sys.executable, "-m", "tafs", "mlflow-ingest", "--results", str(wf / "results"),
                                "--uri", url, "--config", str(wf / "results/config.json"), "--out",
                                str(tmp_path / "again.json"), "--no-progress"], capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
        counts = json.loads((tmp_path / "again.json").read_text())
        assert counts["created"] == counts["replaced"] == counts["completed"] == 0
    finally:
        _stop(server)
