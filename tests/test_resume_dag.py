"""The Snakemake side of resumable training: a memory/speed setting does not re-run a finished training job, a
setting that changes the result does; the Slurm profile asks for the stop signal and re-runs slices."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from dag_utils import REPO, run_snakemake, scratch_workflow
from tafs.paths import Layout

RUN = "tafs_grpo"
# max_runtime_min: a budget that ends every slice after one iteration (exit 75, tafs/train/preempt.py)
SMALL = {"seeds": [0], "train": {"iterations": 2, "prompts_per_iter": 2, "group_size": 2, "checkpoint_every": 5,
                                 "max_runtime_min": 1e-6, "lora": {"rank": 4, "alpha": 8},
                                 "advantage": {"rewards": {"toy_dense": 1.0}}}}
TARGET = str(Layout("results").train_summary(RUN, 0))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished training job (and the prompts it needs) of the toy world, on the shipped toy base, trained in
    two slices: the first exits 75 with a checkpoint, Snakemake retries it (as the Slurm profile does), the second
    resumes and finishes."""
    wf = scratch_workflow(tmp_path_factory.mktemp("resume_dag"))
    res = run_snakemake(wf, "--cores", "1", "--preemptible-rules", "train", "--preemptible-retries", "2", TARGET,
                        configs=[SMALL])
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert re.search(r"Error in rule train:", out) and "exit status 75" in out, out[-3000:]  # the first slice
    log = (wf / "results" / "logs" / "train" / f"{RUN}_seed0.log").read_text()  # the second slice's
    assert "resuming from iteration 1" in log, log[-2000:]
    assert json.loads((wf / TARGET).read_text())["iterations"] == 2
    return wf


def _planned(wf, change: dict, *args: str) -> tuple[list[str], str]:
    """The rules a dry run of TARGET would run with ``change`` over SMALL, and its output."""
    res = run_snakemake(wf, "-n", "--cores", "1", TARGET, *args, configs=[SMALL, change])
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    return re.findall(r"^(?:local)?rule (\w+):", res.stdout, flags=re.M), out


@pytest.mark.parametrize("change", [{"micro_batch": 2}, {"sample_chunk": 1, "decode_chunk": 3, "text_cache": 0},
                                    {"checkpoint_every": 7, "max_runtime_min": 30.0}], ids=lambda c: "+".join(c))
def test_runtime_settings_do_not_rerun_training(trained, change):
    rules, out = _planned(trained, {"train": change})
    assert rules == [], out[-3000:]
    assert "Nothing to be done" in out, out[-3000:]


def test_gpu_count_does_not_rerun_training(trained):
    rules, out = _planned(trained, {}, "--set-resources", "train:gpu=2")
    assert rules == [], out[-3000:]


def test_a_result_setting_reruns_training(trained):
    rules, out = _planned(trained, {"train": {"lr": 0.001, "micro_batch": 2}})
    assert rules == ["train"], out[-3000:]
    assert "params" in out.lower(), out[-3000:]  # the reason Snakemake gives


def test_the_job_gets_runtime_settings_untracked(trained):
    """The settings reach the job (--runtime) while Snakemake's params leave them out; on Slurm the train job asks
    for SIGUSR1 before its time limit."""
    rules, out = _planned(trained, {"train": {"lr": 0.001, "micro_batch": 2}}, "-p", "--profile", "slurm")
    assert rules == ["train"], out[-3000:]
    shell = re.search(r"python -m tafs train .*", out).group(0)
    tracked, untracked = shell.split("--runtime")
    assert '"micro_batch": 2' in untracked and '"micro_batch"' not in tracked, shell
    assert re.search(r"slurm_extra='?--signal=USR1@\d+", out), out[-3000:]


def test_plan_names_dag_models_by_declaration_not_folder():
    """The identity (tracked) names the toy scorer as the config does; its folder goes with the runtime part."""
    from tafs.config import deep_merge
    from tafs.dag import Plan

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    plans = [Plan(deep_merge(cfg, {"train": {"micro_batch": mb}})) for mb in (0, 4)]
    (id0, rt0), (id4, rt4) = (p.train_job(RUN, 0) for p in plans)
    assert id0 == id4 and rt0 != rt4
    assert id0["reward_kwargs"]["clip"] == {"path": None, "scale": 1.0}
    assert rt0["train"]["reward_kwargs"]["clip"]["path"] == str(plans[0].layout.built_model("clip_scorer"))
    assert "micro_batch" not in id0 and rt4["train"]["micro_batch"] == 4
    assert deep_merge(id0, rt0["train"]) == plans[0].train_cfg(RUN, 0)


def test_moving_the_hub_cache_keeps_the_checkpoint_identity(tmp_path):
    """hub.cache is where downloads live, not what a run is: the job's tracked identity and its checkpoint key
    (tafs.train.identity.job_identity) are the same under two caches; only the runtime paths move."""
    from tafs.config import deep_merge
    from tafs.dag import Plan
    from tafs.train.identity import job_identity

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["reward_models"]["clip"] = {"path": {"hub": "openai/clip-vit-base-patch32", "revision": "abc123"}, "scale": 1.0}
    plans = [Plan(deep_merge(cfg, {"hub": {"cache": c}})) for c in ("downloads", str(tmp_path / "scratch" / "hub"))]
    (id0, rt0), (id1, rt1) = (p.train_job(RUN, 0) for p in plans)
    assert id0 == id1 and rt0 != rt1
    assert rt1["train"]["reward_kwargs"]["clip"]["path"] == str(tmp_path / "scratch/hub/openai--clip-vit-base-patch32@abc123")
    prompts = tmp_path / "train.jsonl"
    prompts.write_text('{"prompt": "a red circle"}\n')
    keys = [job_identity(id0, {}, f"{cache}/acme--sd3@main", str(prompts)) for cache in ("downloads", "/scratch/hub")]
    assert keys[0] == keys[1] and keys[0]["model"]["name"] == "acme--sd3@main"
