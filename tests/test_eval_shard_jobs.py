"""Evaluation as scatter / gather Snakemake jobs (eval.shard_jobs = 2) on a 20-prompt task of the user's own and the
shipped toy base: the DAG lists two scatter jobs and a gather; after one scatter job ran (a killed evaluation), a
dry run schedules only the other one and the gather, which writes the evaluation's files. (That the gather's
metrics.json and samples.png are one unsplit job's, exactly: tests/test_eval_shards.py, in-process.)"""

from __future__ import annotations

import json

import pytest
import yaml

from dag_utils import run_snakemake, scratch_workflow
from tafs.config import deep_merge
from tafs.paths import Layout, ModelRef
from test_user_task import PROMPTS, _jobs, _user_config, _write_prompts

L, BASE = Layout("results"), ModelRef.base()
METRICS = str(L.eval_metrics(BASE, "ode", 4))
# 20 prompts in 5 shards of 4 images at one NFE: scatter job 0 samples shards 0, 2, 4; job 1 shards 1, 3
SPLIT = {"eval": {"per_category": None, "batch_size": 4, "shard_size": 4, "shard_jobs": 2},
         "sweep": {"base_nfe": [4], "base_samplers": ["ode"]}}


def _dry_run(wf) -> tuple[dict[str, int], str]:
    res = run_snakemake(wf, "-n", "-p", "--cores", "1", METRICS, "--configfile", "split.yaml")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return _jobs(res.stdout), res.stdout


@pytest.fixture(scope="module")
def wf(tmp_path_factory):
    wf = scratch_workflow(tmp_path_factory.mktemp("shard_jobs"))
    _write_prompts(wf / PROMPTS)
    (wf / "split.yaml").write_text(yaml.safe_dump(deep_merge(_user_config(), SPLIT)))
    return wf


def test_a_killed_split_evaluation_reruns_only_its_unfinished_scatter_jobs(wf):
    jobs, out = _dry_run(wf)
    assert jobs == {"prompts": 1, "eval_base": 2, "gather_eval_base": 1}, out[-3000:]
    assert "--shard-job 0/2" in out and "--shard-job 1/2" in out and "python -m tafs evaluate-gather" in out

    first = str(L.eval_shard_job(BASE, 0, 2))
    res = run_snakemake(wf, "--cores", "1", first, "--configfile", "split.yaml")  # then the evaluation is killed
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert json.loads((wf / first).read_text())["shards"] == {"ode/nfe4": [0, 2, 4]}

    jobs, out = _dry_run(wf)
    assert jobs == {"eval_base": 1, "gather_eval_base": 1}, out[-3000:]
    assert "--shard-job 1/2" in out and "--shard-job 0/2" not in out

    res = run_snakemake(wf, "--cores", "1", METRICS, "--configfile", "split.yaml")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "shards [1, 3] (2 sampled now)" in (wf / L.log("eval", "base_job1.log")).read_text()
    assert (wf / METRICS).exists() and (wf / L.eval_samples(BASE, "ode", 4)).exists()
