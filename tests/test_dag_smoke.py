"""The smoke preset runs the whole grid (tiny) end to end: every table, Figure 4, the report, MLflow."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from dag_utils import run_snakemake, scratch_workflow
from tafs.report.tables import TABLES as REGISTERED

TABLES = list(REGISTERED)  # every registered table (tafs.report.tables)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    wf = scratch_workflow(tmp_path_factory.mktemp("smoke"))
    res = run_snakemake(wf, "--cores", "2", "--configfile", "workflow/presets/smoke.yaml",
                        "--config", "results=results")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return wf / "results"


@pytest.mark.slow
def test_models_runs_and_evals(smoke_run):
    assert (smoke_run / "models" / "base" / "transformer" / "config.json").exists()
    assert (smoke_run / "models" / "clip_scorer" / "config.json").exists()
    grid = json.loads((smoke_run / "manifest.json").read_text())
    # every method preset (8) + N_annealed 1, 5 + N_adv 2 + to_go + CLIP-only + Table 1's TAFS-GRPO on toy_composition
    # (= dense-only); N_adv 1 = no_step_adv (dedup)
    assert len(grid["runs"]) == 14 and set(grid["runs"]) >= {"cps_grpo", "tafs_grpo_shuffled", "no_tafs",
                                                             "tafs_grpo-toy_composition", "tafs_grpo-adv_to_go"}
    base = sorted(smoke_run.glob("eval/base/*/nfe*/metrics.json"))
    assert len(base) == 2 * 3  # 2 samplers x NFE {4, 8, 28} in the smoke preset
    for path in base:
        m = json.loads(path.read_text())
        assert m["n"] == 6 * 4 and set(m["metrics"]) == {"correct", "dense", "clip"}
        assert -1.0 <= m["metrics"]["clip"]["mean"] <= 1.0 and (path.parent / "samples.png").exists()
    swept = {r for t in ("table1", "table2") for _, r in grid["tables"][t]}
    for name, spec in grid["runs"].items():
        run = smoke_run / "runs" / name / "seed0"
        summary = json.loads((run / "train_summary.json").read_text())
        assert summary["iterations"] == 2 and (run / "adapter" / "adapter_model.safetensors").exists()
        for sampler in ("ode", "annealed"):  # every run under both samplers; ablation runs at the tables' NFE only
            for nfe in (4, 8):
                path = smoke_run / f"eval/runs/{name}/seed0/{sampler}/nfe{nfe}/metrics.json"
                assert path.is_file() == (nfe == 8 or name in swept), path
                if path.is_file():
                    m = json.loads(path.read_text())
                    assert m["model"] == name and m["nfe"] == nfe and m["sampler"] == sampler
    flow = json.loads((smoke_run / "runs/flow_grpo/seed0/train_summary.json").read_text())
    assert (flow["nfe_old"], flow["nfe_theta"]) == (10, 6) and grid["runs"]["flow_grpo"]["eval_sampler"] == "ode"
    rows = [json.loads(x) for x in (smoke_run / "runs/tafs_grpo/seed0/metrics.jsonl").read_text().splitlines()]
    assert {"reward/clip/step2_pearson_final", "reward/toy_dense/step3_pearson_final"} <= set(rows[0])
    assert not list(smoke_run.rglob(".*.tmp")) and not list(smoke_run.rglob(".metrics*"))  # atomic writes


@pytest.mark.slow
def test_tables_figure_report(smoke_run):
    for t in TABLES:
        for ext in ("csv", "md", "tex"):
            assert (smoke_run / "tables" / f"{t}.{ext}").stat().st_size > 0
    grid = json.loads((smoke_run / "manifest.json").read_text())

    def shown(name: str) -> pd.DataFrame:  # the rows md/tex show: each model with the sampler its method declares
        t = pd.read_csv(smoke_run / "tables" / f"{name}.csv")
        assert t.groupby([c for c in ("run", "nfe") if c in t.columns])["declared"].sum().eq(1).all(), name
        runs = t[t["declared"] & (t["run"] != "base")]
        assert all(s == grid["runs"][r]["eval_sampler"] for r, s in zip(runs["run"], runs["sampler"])), name
        return t[t["declared"]]

    t1 = pd.read_csv(smoke_run / "tables" / "table1.csv")
    # base at (ode, 28), (ode, 4), (ode, 8) + TAFS-GRPO trained on toy_composition x NFE {4, 8} x 2 samplers
    assert len(t1) == 3 + 2 * 2 and {"correct", "correct_ci95", "dense", "clip", "declared"} <= set(t1.columns)
    assert set(t1.loc[t1["run"] == "base", "sampler"]) == {"ode"}
    assert set(t1["run"]) == {"base", "tafs_grpo-toy_composition"} and len(shown("table1")) == 5
    header = next(x for x in (smoke_run / "tables" / "table1.md").read_text().splitlines() if x.startswith("| Method"))
    assert "Strict acc. (GenEval-like) (%) [in-domain]" in header  # Table 1's task: strict accuracy is trained on
    t2 = shown("table2")
    assert list(t2["method"]) == ["Base", "Flow-GRPO", "DanceGRPO", "MixGRPO", "TAFS-GRPO"]
    assert {"nfe_old", "nfe_theta", "sec_per_iter", "sampler"} <= set(t2.columns)
    assert list(shown("table3")["method"]) == ["TAFS-GRPO", "w/o TAFS", "w/o Step Adv.", "TAFS-GRPO (shuffled adv.)"]
    assert list(shown("table4")["run"]) == ["tafs_grpo-n_annealed1", "tafs_grpo", "tafs_grpo-n_annealed5"]
    assert list(shown("table5")["run"]) == ["no_step_adv", "tafs_grpo-n_adv2", "tafs_grpo", "tafs_grpo-adv_to_go"]
    assert len(shown("table6")) == 3
    t7 = pd.read_csv(smoke_run / "tables" / "table7.csv")
    assert len(t7) == 2 and {"toy_dense", "clip"} <= set(t7.columns)
    fig = smoke_run / "figures" / "figure4.png"
    assert fig.stat().st_size > 10_000 and fig.with_suffix(".pdf").exists()
    html = (smoke_run / "report.html").read_text(errors="ignore")
    assert "table1.csv" in html and "figure4.png" in html


@pytest.mark.slow
def test_mlflow_runs_and_reingest(smoke_run):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{smoke_run / 'mlflow.db'}"
    first = json.loads((smoke_run / "mlflow" / "ingest.json").read_text())
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(first["experiment_name"])
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    n_stages = (len(list(smoke_run.glob("runs/*/seed*/train_summary.json")))
                + len(list(smoke_run.glob("eval/**/metrics.json"))))
    assert len(runs) == first["total_runs"] >= n_stages + 2  # + pretrain, scorer, config/report runs
    by_key = {r.data.tags["tafs.key"]: r for r in runs}
    train = by_key["train/tafs_grpo/seed0"]
    assert train.data.tags["rule"] == "train" and train.data.tags["seed"] == "0"
    assert len(client.get_metric_history(train.info.run_id, "loss")) == 2
    ev = next(r for k, r in by_key.items() if k.startswith("eval/runs/tafs_grpo/seed0/") and k.endswith("nfe8"))
    m = json.loads((smoke_run / "eval/runs/tafs_grpo/seed0/annealed/nfe8/metrics.json").read_text())
    assert ev.data.metrics["correct"] == pytest.approx(m["metrics"]["correct"]["mean"])
    assert "samples.png" in [a.path for a in client.list_artifacts(ev.info.run_id)]
    # ingesting again creates nothing new
    out = smoke_run / "mlflow" / "again.json"
    subprocess.run([sys.executable, "-m", "tafs", "mlflow-ingest", "--results", str(smoke_run), "--uri", uri,
                    "--config", str(smoke_run / "config.json"), "--out", str(out), "--no-progress"], check=True)
    again = json.loads(out.read_text())
    assert again["created"] == 0 and again["total_runs"] == first["total_runs"]
