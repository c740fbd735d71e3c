"""The smoke preset runs the DAG end to end in a scratch folder and yields its plot and metrics."""

import json

import pytest

from dag_utils import run_snakemake, scratch_workflow


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    wf = scratch_workflow(tmp_path_factory.mktemp("smoke"))
    res = run_snakemake(wf, "--cores", "2", "--configfile", "workflow/presets/smoke.yaml",
                        "--config", "results=results")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return wf / "results"


@pytest.mark.slow
def test_smoke_dag_outputs(smoke_run):
    fig = smoke_run / "figures" / "figure4.png"
    assert fig.stat().st_size > 10_000 and fig.with_suffix(".pdf").exists()
    assert (smoke_run / "models" / "base" / "transformer" / "config.json").exists()
    evals = sorted(smoke_run.glob("eval/base/*/nfe*/metrics.json"))
    assert len(evals) == 2 * 4  # 2 samplers x NFE {1, 2, 4, 8} in the smoke preset
    for path in evals:
        m = json.loads(path.read_text())
        assert m["n"] == 6 * 4
        assert 0.0 <= m["metrics"]["dense"]["mean"] <= 1.0
        assert set(m["metrics"]["correct"]["by_category"]) == {
            "single_object", "two_object", "counting", "colors", "position", "color_attr"}
        assert (path.parent / "grid.png").exists()
    # TAFS-GRPO and its shuffled-advantage control, trained and swept at 4 and 8 NFE
    for method in ("tafs_grpo", "tafs_grpo_shuffled"):
        run = smoke_run / "runs" / method / "seed0"
        assert (run / "adapter" / "adapter_model.safetensors").exists()
        summary = json.loads((run / "train_summary.json").read_text())
        assert summary["iterations"] == 2 and summary["nfe_old"] == 4 and summary["nfe_theta"] == 3
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
        for nfe in (4, 8):
            m = json.loads((smoke_run / f"eval/runs/{method}/seed0/annealed/nfe{nfe}/metrics.json").read_text())
            assert m["model"] == method and m["sampler"] == "annealed" and m["nfe"] == nfe
    # no temp files left behind by atomic writes
    assert not list(smoke_run.rglob(".*.tmp")) and not list(smoke_run.rglob(".metrics*"))
