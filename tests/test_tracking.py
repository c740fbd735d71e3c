"""MLflow ingest of a finished results folder (tafs.tracking), against a real SQLite tracking store.

A fresh MLflow database costs a couple of seconds of schema migrations, so the read-only checks share
one ingested tree (module fixture) and only the test that changes sources builds its own.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tafs.io import read_json, write_json
from tafs.tracking.ingest import ingest, main
from tafs.tracking.payload import clean_key, flatten, git_commit
from tafs.tracking.store import MAX_ENTITIES_PER_BATCH, MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH, batches

mlflow = pytest.importorskip("mlflow")
from mlflow.entities import ViewType  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

CONFIG = {"task": "toy_preference", "experiment": "smoke", "results": "results", "seeds": [0, 1], "train": {"lr": 3e-4, "method": {"sampler": "annealed"}}}
N_ITERS = 5
N_RUNS = 8  # config, the base model (its pretraining), 2 train, 3 evals, report
REWARD_KEY = "reward/toy_dense/step2_mean"


# ------------------------------------------------------------------------------------------------
# A small fake results tree
# ------------------------------------------------------------------------------------------------


def _png(path: Path, shade: int = 0) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (shade, 64, 128)).save(path)


def _eval_json(model: str, sampler: str, nfe: int, correct: float) -> dict[str, Any]:
    def metric(mean: float) -> dict[str, Any]:
        cats = {"colors": {"mean": mean / 2, "ci95": 0.1, "n": 4}, "counting": {"mean": mean, "ci95": 0.2, "n": 4}}
        return {"mean": mean, "ci95": 0.05, "n": 8, "by_category": cats}

    return {
        "model": model,
        "sampler": sampler,
        "nfe": nfe,
        "n": 8,
        "metrics": {"correct": metric(correct), "dense": metric(0.6)},
        "chance": {"correct": 0.0026, "dense": 0.45},
        "wall_s": 1.5,
        "config": {"sampler": sampler, "nfe": nfe, "per_category": 4, "split": "test", "seed": 1234},
    }


def _train(folder: Path, run: str, seed: int, final: float) -> None:
    cfg = {"seed": seed, "iterations": N_ITERS, "lr": 3e-4, "lora": {"rank": 4}, "method": {"sampler": "annealed"}}
    write_json(
        folder / "train_summary.json",
        {
            "iterations": N_ITERS,
            "wall_s": 12.5,
            "resumed": False,
            "config": cfg,
            "nfe_old": 4,
            "nfe_theta": 3,
            "sec_per_iter": 2.5,
            "final_reward": {"toy_dense": final},
        },
    )
    rows = [
        {"iteration": i, "loss": 0.1 / (i + 1), "clip_frac": 0.0, "nfe_old": 4, REWARD_KEY: 0.5 + 0.01 * i}
        for i in range(N_ITERS)
    ]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (folder / "metrics.jsonl").write_text(text + '{"iteration": 5, "loss": 0.0')  # a partial last line


def make_results(root: Path) -> Path:
    """A finished results folder in the pipeline's layout, plus the temp debris atomic writes leave."""
    write_json(root / "models" / "base" / "pretrain_metrics.json",
               {"final_loss": 0.01, "wall_s": 30.0, "steps": 100, "config": {"lr": 1e-3, "model": {"layers": 2}}})
    _train(root / "runs" / "tafs_grpo" / "seed0", "tafs_grpo", 0, 0.7)
    _train(root / "runs" / "flow_grpo" / "seed1", "flow_grpo", 1, 0.4)
    for folder, model, sampler, nfe, correct in (
        (root / "eval" / "base" / "ode" / "nfe4", "base", "ode", 4, 0.3),
        (root / "eval" / "runs" / "tafs_grpo" / "seed0" / "annealed" / "nfe4", "tafs_grpo", "annealed", 4, 0.8),
        (root / "eval" / "runs" / "flow_grpo" / "seed1" / "annealed" / "nfe4", "flow_grpo", "annealed", 4, 0.5),
    ):
        write_json(folder / "metrics.json", _eval_json(model, sampler, nfe, correct))
        _png(folder / "samples.png")
    (root / "eval" / "base" / "ode" / ".nfe8.tmp123").mkdir()  # an unfinished atomic_dir: ignored
    (root / "tables").mkdir()
    (root / "tables" / "main.csv").write_text("method,correct\ntafs_grpo,0.8\n")
    (root / "tables" / ".main.csv.x.csv").write_text("partial")  # an unfinished atomic write: ignored
    _png(root / "figures" / "figure4.png")
    return root


def _config_file(tmp: Path) -> Path:
    path = tmp / "config.json"
    path.write_text(json.dumps(CONFIG, indent=1))
    return path


def _runs(client: MlflowClient, exp_id: str, view: int = ViewType.ACTIVE_ONLY) -> dict[str, Any]:
    runs = client.search_runs([exp_id], run_view_type=view, max_results=1000)
    return {r.data.tags["tafs.key"]: r for r in runs}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """One tree ingested once through the command line; yields (results, out summary, client, exp id)."""
    tmp = tmp_path_factory.mktemp("trk")
    results = make_results(tmp / "results")
    uri = f"sqlite:///{tmp}/mlflow.db"
    out = results / "mlflow" / "ingest.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        rc = main(["--results", str(results), "--uri", uri, "--config", str(_config_file(tmp)),
                   "--out", str(out), "--no-progress"])
        assert rc == 0
        client = MlflowClient(tracking_uri=uri)
        summary = read_json(out)
        yield results, summary, client, summary["experiment_id"], uri


# ------------------------------------------------------------------------------------------------
# First ingest
# ------------------------------------------------------------------------------------------------


def test_experiment_named_by_task_and_config(ingested):
    """<task>/<experiment label> [short hash]: readable in the UI's list, the whole hash as a tag."""
    results, summary, client, exp_id, uri = ingested
    digest = hashlib.sha256(json.dumps(CONFIG, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    exp = client.get_experiment(exp_id)
    label = CONFIG.get("experiment") or "config"
    assert exp.name == f"{CONFIG['task']}/{label} [{digest[:6]}]" == summary["experiment_name"]
    assert exp.tags["tafs.config_hash"] == digest
    assert exp.tags["tafs.results"] == str(results.resolve())
    assert exp.artifact_location == (results / "mlflow" / "artifacts").resolve().as_uri()
    assert summary["created"] == N_RUNS and summary["skipped"] == 0 and summary["replaced"] == 0
    assert summary["total_runs"] == N_RUNS and summary["tracking_uri"] == uri


def test_one_finished_run_per_stage(ingested):
    _, _, client, exp_id, _ = ingested
    runs = _runs(client, exp_id)
    assert set(runs) == {
        "config", "model/base", "report",
        "train/tafs_grpo/seed0", "train/flow_grpo/seed1",
        "eval/base/ode/nfe4", "eval/runs/tafs_grpo/seed0/annealed/nfe4", "eval/runs/flow_grpo/seed1/annealed/nfe4",
    }
    for key, run in runs.items():
        assert run.info.status == "FINISHED"
        assert run.info.run_name == {"model/base": "Base model", "report": "report: Tables 1-7, Figure 4",
                                     "train/tafs_grpo/seed0": "tafs_grpo · seed 0",
                                     "train/flow_grpo/seed1": "flow_grpo · seed 1",
                                     "eval/base/ode/nfe4": "Base · ode · 4 NFE",
                                     "eval/runs/tafs_grpo/seed0/annealed/nfe4": "tafs_grpo · seed 0 · annealed · 4 NFE",
                                     "eval/runs/flow_grpo/seed1/annealed/nfe4": "flow_grpo · seed 1 · annealed · 4 NFE",
                                     }.get(key, key)
        assert re.fullmatch(r"[0-9a-f]{64}", run.data.tags["tafs.fingerprint"])
        assert run.data.tags["git_commit"] == "unknown" or re.fullmatch(r"[0-9a-f]{40}", run.data.tags["git_commit"])


def test_eval_run_metrics_params_tags(ingested):
    results, _, client, exp_id, _ = ingested
    run = _runs(client, exp_id)["eval/runs/tafs_grpo/seed0/annealed/nfe4"]
    src = read_json(results / "eval" / "runs" / "tafs_grpo" / "seed0" / "annealed" / "nfe4" / "metrics.json")
    m = run.data.metrics
    assert m["correct"] == src["metrics"]["correct"]["mean"]
    assert m["correct_ci95"] == src["metrics"]["correct"]["ci95"]
    assert m["correct/colors"] == src["metrics"]["correct"]["by_category"]["colors"]["mean"]
    assert m["dense/counting"] == src["metrics"]["dense"]["by_category"]["counting"]["mean"]
    assert m["chance/dense"] == src["chance"]["dense"] and m["wall_s"] == src["wall_s"]
    p = run.data.params
    assert (p["sampler"], p["nfe"], p["model"], p["split"], p["seed"]) == ("annealed", "4", "tafs_grpo", "test", "1234")
    t = run.data.tags
    assert (t["rule"], t["method"], t["seed"]) == ("eval_run", "tafs_grpo", "0")
    assert (t["sampler"], t["nfe"]) == ("annealed", "4")
    assert t["tafs.key"] == "eval/runs/tafs_grpo/seed0/annealed/nfe4"
    base = _runs(client, exp_id)["eval/base/ode/nfe4"]
    assert base.data.tags["rule"] == "eval_base" and "method" not in base.data.tags
    assert base.data.metrics["correct"] == 0.3


def test_train_run_final_metrics_params_tags(ingested):
    _, _, client, exp_id, _ = ingested
    run = _runs(client, exp_id)["train/flow_grpo/seed1"]
    m, p, t = run.data.metrics, run.data.params, run.data.tags
    assert m["sec_per_iter"] == 2.5 and m["final_reward/toy_dense"] == 0.4 and m["wall_s"] == 12.5
    assert m["nfe_theta"] == 3
    assert m["summary/nfe_old"] == 4  # nfe_old is also a training curve: the final value must not splice into it
    assert p["lr"] == "0.0003" and p["lora.rank"] == "4" and p["method.sampler"] == "annealed"
    assert (t["rule"], t["method"], t["seed"]) == ("train", "flow_grpo", "1")
    assert t["tafs.key"] == "train/flow_grpo/seed1"
    assert run.info.end_time - run.info.start_time == 12500  # wall_s before the summary was written


def test_training_curve_has_one_point_per_iteration(ingested):
    _, _, client, exp_id, _ = ingested
    run = _runs(client, exp_id)["train/tafs_grpo/seed0"]
    history = sorted(client.get_metric_history(run.info.run_id, REWARD_KEY), key=lambda h: h.step)
    assert [h.step for h in history] == list(range(N_ITERS))  # the partial last line is skipped
    assert [h.value for h in history] == pytest.approx([0.5 + 0.01 * i for i in range(N_ITERS)])
    assert len(client.get_metric_history(run.info.run_id, "loss")) == N_ITERS


def test_artifacts_logged(ingested):
    _, _, client, exp_id, _ = ingested
    runs = _runs(client, exp_id)

    def names(key: str, path: str | None = None) -> set[str]:
        return {f.path for f in client.list_artifacts(runs[key].info.run_id, path)}

    assert "samples.png" in names("eval/base/ode/nfe4")
    assert {"metrics.jsonl", "train_summary.json"} <= names("train/tafs_grpo/seed0")
    assert names("report", "tables") == {"tables/main.csv"}
    assert names("report", "figures") == {"figures/figure4.png"}
    local = client.download_artifacts(runs["config"].info.run_id, "config.json")
    assert json.loads(Path(local).read_text()) == CONFIG
    assert runs["config"].data.params["train.method.sampler"] == "annealed"
    assert runs["model/base"].data.metrics["final_loss"] == 0.01  # the base's own run: its pretraining


def test_reingest_creates_nothing(ingested, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    results, _, client, exp_id, uri = ingested
    before = {k: r.info.run_id for k, r in _runs(client, exp_id).items()}
    summary = ingest(results, uri, CONFIG, progress=False)
    assert (summary["created"], summary["replaced"], summary["skipped"]) == (0, 0, N_RUNS)
    assert summary["total_runs"] == N_RUNS
    assert {k: r.info.run_id for k, r in _runs(client, exp_id).items()} == before


# ------------------------------------------------------------------------------------------------
# Changed sources, leftovers, errors
# ------------------------------------------------------------------------------------------------


def test_changed_source_replaces_only_that_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    results = make_results(tmp_path / "results")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = ingest(results, uri, CONFIG, progress=False)
    client = MlflowClient(tracking_uri=uri)
    exp_id = first["experiment_id"]
    before = {k: r.info.run_id for k, r in _runs(client, exp_id).items()}

    path = results / "eval" / "base" / "ode" / "nfe4" / "metrics.json"  # the eval stage re-ran
    data = read_json(path)
    data["metrics"]["correct"]["mean"] = 0.42
    write_json(path, data)
    second = ingest(results, uri, CONFIG, progress=False)
    assert (second["created"], second["replaced"], second["skipped"]) == (0, 1, N_RUNS - 1)
    after = _runs(client, exp_id)
    assert len(after) == second["total_runs"] == N_RUNS
    assert after["eval/base/ode/nfe4"].data.metrics["correct"] == 0.42
    assert after["eval/base/ode/nfe4"].info.run_id != before["eval/base/ode/nfe4"]
    assert all(after[k].info.run_id == before[k] for k in before if k != "eval/base/ode/nfe4")
    assert list(_runs(client, exp_id, ViewType.DELETED_ONLY)) == ["eval/base/ode/nfe4"]

    # A run left unfinished by an interrupted ingest (no fingerprint, still RUNNING) is cleaned up.
    client.create_run(exp_id, tags={"tafs.key": "train/tafs_grpo/seed0"}, run_name="train/tafs_grpo/seed0")
    third = ingest(results, uri, CONFIG, progress=False)
    assert (third["created"], third["replaced"], third["skipped"]) == (0, 0, N_RUNS)
    assert third["total_runs"] == N_RUNS
    assert _runs(client, exp_id)["train/tafs_grpo/seed0"].info.run_id == before["train/tafs_grpo/seed0"]


def test_missing_results_folder_names_the_path(tmp_path):
    missing = tmp_path / "no_such_results"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        ingest(missing, f"sqlite:///{tmp_path}/mlflow.db", CONFIG, progress=False)
    with pytest.raises(SystemExit, match=re.escape(str(missing))):
        main(["--results", str(missing), "--uri", f"sqlite:///{tmp_path}/mlflow.db",
              "--config", str(_config_file(tmp_path)), "--out", str(tmp_path / "ingest.json")])
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ingest.json").exists()


# ------------------------------------------------------------------------------------------------
# Pure helpers
# ------------------------------------------------------------------------------------------------


def test_batches_stay_within_mlflow_limits():
    params = {f"p{i}": str(i) for i in range(250)}
    tags = {f"t{i}": "x" for i in range(30)}
    metrics = [(f"m{i % 7}", float(i), i) for i in range(2500)]
    got_p, got_t, got_m = [], [], []
    for ms, ps, ts in batches(params, metrics, tags, timestamp=1):
        assert len(ps) + len(ts) <= MAX_PARAMS_TAGS_PER_BATCH
        assert len(ms) <= MAX_METRICS_PER_BATCH and len(ms) + len(ps) + len(ts) <= MAX_ENTITIES_PER_BATCH
        got_p += ps
        got_t += ts
        got_m += ms
    assert {p.key: p.value for p in got_p} == params and {t.key for t in got_t} == set(tags)
    assert [(m.key, m.value, m.step) for m in got_m] == metrics
    assert list(batches({}, [], {}, timestamp=1)) == []


def test_flatten_and_clean_key(tmp_path):
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}
    assert clean_key("reward/toy dense/step2_mean") == "reward/toy dense/step2_mean"
    assert clean_key("a//b/../c:d?") == "a/b/__/c_d_"
    assert clean_key("x" * 300) == "x" * 250
    assert git_commit(tmp_path) == "unknown"


def test_runs_are_nested_under_their_model(ingested):
    """Each model's run holds its evaluations; the experiment opens on its runs (a model-training experiment)."""
    _, _, client, exp_id, _ = ingested
    runs = _runs(client, exp_id)
    parent = {k: r.data.tags.get("mlflow.parentRunId") for k, r in runs.items()}
    assert parent["eval/base/ode/nfe4"] == runs["model/base"].info.run_id
    assert parent["eval/runs/tafs_grpo/seed0/annealed/nfe4"] == runs["train/tafs_grpo/seed0"].info.run_id
    assert parent["eval/runs/flow_grpo/seed1/annealed/nfe4"] == runs["train/flow_grpo/seed1"].info.run_id
    assert all(parent[k] is None for k in ("config", "report", "model/base", "train/tafs_grpo/seed0"))
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"
    hits = client.search_runs([exp_id], "tags.method = 'tafs_grpo' and tags.nfe = '4'")
    assert [r.data.tags["tafs.key"] for r in hits] == ["eval/runs/tafs_grpo/seed0/annealed/nfe4"]
