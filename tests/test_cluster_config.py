"""Cluster support without a cluster: the Slurm profile, per-stage resources, the multi-GPU launcher
(dry runs), the real-model preset, and the GPU-count check of ``tafs train --expect-gpus``."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest
import yaml

from dag_utils import REPO, run_snakemake, scratch_workflow
from tafs.distributed import free_port, gpu_count_error

PROFILE = REPO / "workflow" / "profiles" / "slurm" / "config.yaml"


# -- the profile ---------------------------------------------------------------------------------------


def test_profile_contents():
    prof = yaml.safe_load(PROFILE.read_text())
    assert prof["executor"] == "slurm"
    assert prof["jobs"] >= 1 and prof["retries"] == 1
    # training runs in slices: re-submitted until done, with SIGUSR1 to every process before the time limit
    assert prof["preemptible-rules"] == ["train"] and prof["preemptible-retries"] >= 10
    assert re.fullmatch(r"'--signal=USR1@\d+'", prof["set-resources"]["train"]["slurm_extra"])
    assert prof["rerun-incomplete"] is True and prof["printshellcmds"] is True
    assert prof["latency-wait"] >= 5
    res = dict(r.split("=", 1) for r in prof["default-resources"])
    assert {"mem_mb", "runtime"} <= set(res)
    assert "slurm_partition" not in res and "slurm_account" not in res  # left to the user
    assert "--gres" not in PROFILE.read_text().replace("# ", "")


def test_literal_profile_name_resolves_to_the_project_profile():
    link = REPO / "slurm"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert link.resolve() == PROFILE.parent.resolve()


@pytest.fixture(scope="module")
def wf(tmp_path_factory):
    return scratch_workflow(tmp_path_factory.mktemp("cluster"))


def _jobs(stdout: str, rule: str) -> list[dict]:
    """(resources line, shell command) of every job of ``rule`` in a `-n -p` dry run."""
    out = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", stdout):
        if block.startswith((f"rule {rule}:", f"localrule {rule}:")):
            res = re.search(r"resources: (.*)", block)
            cmd = re.search(r"Shell command: (.*)", block)
            out.append({"resources": dict(kv.split("=", 1) for kv in res.group(1).split(", ")) if res else {},
                        "shell": cmd.group(1) if cmd else ""})
    return out


def test_the_users_command_picks_up_the_profile(wf):
    """`snakemake --cores all --profile slurm` from the repository root (dry run: no cluster needed)."""
    res = run_snakemake(wf, "-n", "--cores", "all", "--profile", "slurm")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert re.search(r"Using profiles? slurm", out), out
    # toy default: gpu 0 everywhere -> CPU jobs (cpus_per_task = threads), no GPU resource at all
    train = _jobs(res.stdout, "train")
    assert len(train) == 5 * 3 + 7  # the default grid: 12 distinct runs, 7 of them ablation-only at one seed
    for job in train:
        assert "gpu" not in job["resources"] and "cpus_per_gpu" not in job["resources"], job
        assert job["resources"]["cpus_per_task"] == "1" and job["resources"]["runtime"] == "240"
        assert job["shell"].startswith("python -m tafs train ") and "--expect-gpus 0" in job["shell"]
    scorer = _jobs(res.stdout, "build_model")[0]["resources"]  # the toy scorer: the `pretrain` stage's resources
    assert scorer["mem_mb"] == "4000" and scorer["cpus_per_task"] == "1"
    assert all(j["resources"]["cpus_per_task"] == "1" for j in _jobs(res.stdout, "eval_base"))
    assert all(j["resources"]["mem_mb"] == "1000" for j in _jobs(res.stdout, "prompts"))
    assert len(_jobs(res.stdout, "tables")) == 1  # a localrule: tests/test_slurm.py checks it stays off Slurm


def test_multi_gpu_training_uses_accelerate(wf):
    res = run_snakemake(wf, "-n", "-p", "--cores", "all", "--set-resources", "train:gpu=4")
    assert res.returncode == 0, res.stdout + res.stderr
    for job in _jobs(res.stdout, "train"):
        assert job["resources"]["gpu"] == "4"
        assert job["shell"].startswith("accelerate launch --multi_gpu --num_processes 4 --num_machines 1 "), job
        assert "--main_process_port $(python -m tafs free-port) -m tafs train " in job["shell"]
        assert "--expect-gpus 4" in job["shell"]
    res = run_snakemake(wf, "-n", "-p", "--cores", "all", "--set-resources", "train:gpu=1")
    for job in _jobs(res.stdout, "train"):
        assert job["shell"].startswith("python -m tafs train ") and "--expect-gpus 1" in job["shell"], job


def test_gpu_resources_from_config(wf):
    cfg = {"resources": {"train": {"gpu": 2, "cpus_per_gpu": 6, "mem_mb": 9000, "runtime": 30},
                         "eval": {"gpu": 1, "cpus_per_gpu": 3, "mem_mb": 5000, "runtime": 20}}}
    res = run_snakemake(wf, "-n", "-p", "--cores", "all", configs=[cfg])
    assert res.returncode == 0, res.stdout + res.stderr
    for job in _jobs(res.stdout, "train"):
        r = job["resources"]
        assert (r["gpu"], r["cpus_per_gpu"], r["nodes"], r["mem_mb"], r["runtime"]) == ("2", "6", "1", "9000", "30")
        assert "cpus_per_task" not in r  # it would override --cpus-per-gpu in the Slurm plugin
        assert "--num_processes 2" in job["shell"] and "--expect-gpus 2" in job["shell"]
    for job in _jobs(res.stdout, "eval_base"):
        assert (job["resources"]["gpu"], job["resources"]["cpus_per_gpu"]) == ("1", "3")


def test_account_qos_and_constraint_per_stage_reach_the_gpu_jobs_only(wf):
    """A dry run with an account, a QOS, a constraint and a GPU type on the GPU stages and a CPU partition on the
    small stages: every GPU job carries them, no CPU job does; each job's threads are the CPUs it asks for."""
    gpu = {"slurm_partition": "gpu", "slurm_account": "proj42", "slurm_qos": "high", "constraint": "h100|a100",
           "gpu_model": "h100"}
    cfg = {"resources": {"train": {"gpu": 2, "cpus_per_gpu": 6, "mem_mb": 9000, "runtime": 30, **gpu},
                         "eval": {"gpu": 1, "cpus_per_gpu": 3, "mem_mb": 5000, "runtime": 20, **gpu},
                         "default": {"mem_mb": 1000, "runtime": 15, "slurm_partition": "cpu"}}}
    res = run_snakemake(wf, "-n", "-p", "--cores", "64", configs=[cfg])
    assert res.returncode == 0, res.stdout + res.stderr
    want = {"slurm_partition": "gpu", "slurm_account": "proj42", "qos": "high", "constraint": "h100|a100",
            "gpu_model": "h100"}
    for rule, threads in (("train", 6), ("eval_base", 3), ("eval_run", 3)):
        jobs = _jobs(res.stdout, rule)
        assert jobs, rule
        for job in jobs:
            assert {k: job["resources"].get(k) for k in want} == want, (rule, job)
            assert f"--threads {threads}" in job["shell"], (rule, job["shell"])  # per process: its GPU's CPUs
    for rule in ("prompts", "build_model"):  # CPU stages: no GPU partition, account, QOS or GPU type
        for job in _jobs(res.stdout, rule):
            assert not {"slurm_account", "qos", "constraint", "gpu_model", "gpu"} & set(job["resources"]), job
            assert job["resources"].get("slurm_partition") != "gpu", job
    assert all(j["resources"]["slurm_partition"] == "cpu" for j in _jobs(res.stdout, "prompts"))


@pytest.mark.parametrize("bad, needle", [
    ({"resources": {"train": {"gpus": 2}}}, "gpus"),
    ({"resources": {"eval": {"gpu": 2}}}, "gpu"),          # evaluation is one process
    ({"resources": {"train": {"gpu": -1}}}, "gpu"),
    ({"resources": {"train": {"runtime": "2h"}}}, "runtime"),
    ({"resources": {"plots": {"mem_mb": 1}}}, "plots"),
])
def test_bad_resources_fail_validation(wf, bad, needle):
    """The schema check the Snakefile runs (tafs.planning.command.load_config: the same merge and validation), in
    process; the first case also through `snakemake` (its message and exit code)."""
    from tafs.config import ConfigError
    from tafs.planning.command import load_config

    path = wf / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError) as err:
        load_config([str(path)], wf)
    assert needle in str(err.value) and "validat" in str(err.value).lower(), err.value
    if "gpus" in bad["resources"].get("train", {}):
        res = run_snakemake(wf, "-n", "--cores", "1", configs=[bad])
        out = res.stdout + res.stderr
        assert res.returncode != 0 and needle in out and "validat" in out.lower(), out


def test_sd3_cluster_preset_plans_downloads_and_multi_gpu_training(wf):
    """The real-model preset validates on a machine without weights: the model and the CLIP reward are planned as
    download jobs (local rules: the login node has the network), training as 8-GPU accelerate jobs."""
    preset = yaml.safe_load((REPO / "workflow" / "presets" / "sd3_cluster.yaml").read_text())
    assert preset["model"]["pretrained"]["hub"] == "stabilityai/stable-diffusion-3.5-medium"
    res = run_snakemake(wf, "-n", "-p", "--cores", "all", "--profile", "slurm",
                        "--configfile", "workflow/presets/sd3_cluster.yaml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert not any("models/base " in j["shell"] for j in _jobs(res.stdout, "build_model"))  # a given base
    downloads = _jobs(res.stdout, "download")
    assert len(downloads) == 2, res.stdout[-3000:]
    shells = " ".join(j["shell"] for j in downloads)
    assert "--hub stabilityai/stable-diffusion-3.5-medium" in shells and "--hub openai/clip-vit-large-patch14" in shells
    n = preset["resources"]["train"]["gpu"]
    for job in _jobs(res.stdout, "train"):
        assert job["resources"]["gpu"] == str(n) and f"--num_processes {n} " in job["shell"]
        assert '"resolution": 512' in job["shell"] and "downloads/stabilityai--stable-diffusion-3.5-medium@main" \
            in job["shell"]
    assert any('"resolution": 1024' in j["shell"] for j in _jobs(res.stdout, "eval_base"))


# -- tafs train --expect-gpus ----------------------------------------------------------------------------


@pytest.mark.parametrize("expected, visible, world", [
    (0, 0, 1), (0, 4, 1),      # CPU job: nothing checked
    (1, 1, 1),                 # one GPU, plain python
    (4, 4, 4),                 # accelerate: 4 processes, each sees all 4 GPUs
    (4, 1, 4),                 # one GPU per task (srun --gpus-per-task=1)
])
def test_gpu_count_ok(expected, visible, world):
    assert gpu_count_error(expected, visible, world) is None


@pytest.mark.parametrize("expected, visible, world, cvd, cuda, hint", [
    (1, 0, 1, None, True, "no GPU was allocated"),
    (1, 0, 1, None, False, "CPU-only build"),
    (2, 2, 1, "0,1", True, "accelerate launch --num_processes 2"),   # 2 GPUs, one process
    (4, 4, 2, "0,1,2,3", True, "--num_processes (2) must equal"),
    (1, 8, 1, None, True, "CUDA_VISIBLE_DEVICES"),                    # a workstation's 8 GPUs for gpu: 1
    (2, 1, 1, "0", True, "sees 1 CUDA device"),
])
def test_gpu_count_mismatch(expected, visible, world, cvd, cuda, hint):
    msg = gpu_count_error(expected, visible, world, cuda_visible_devices=cvd, cuda_build=cuda)
    assert msg is not None and hint in msg, msg
    assert "resources.train.gpu" in msg and "CUDA_VISIBLE_DEVICES=" in msg
    assert f"expected {expected} GPU" in msg


def test_negative_expect_gpus():
    assert "must be >= 0" in gpu_count_error(-1, 0)


def test_free_port_is_bindable():
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_cli_expect_gpus_fails_before_loading(tmp_path):
    """On a machine without the requested GPU `tafs train` stops at once with the message."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU visible, whatever the machine
    res = subprocess.run([sys.executable, "-m", "tafs", "train", "--model", str(tmp_path / "missing"),
                          "--prompts", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o"),
                          "--ckpt-dir", str(tmp_path / "c"), "--expect-gpus", "1"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode != 0
    assert "expected 1 GPU(s)" in res.stderr and "CUDA_VISIBLE_DEVICES=''" in res.stderr, res.stderr
    assert not (tmp_path / "o").exists()


def test_table1_baselines_preset_plans_each_model_once(wf):
    """Every baseline of Table 1 is an evaluation job through its own pipeline; each hub model (FLUX.1-dev is the
    base of three of them, the Llama of two) is downloaded once."""
    res = run_snakemake(wf, "-n", "-p", "--cores", "all", "--configfile", "workflow/presets/sd3_cluster.yaml",
                        "workflow/presets/table1_baselines.yaml")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    baselines = yaml.safe_load((REPO / "workflow" / "presets" / "table1_baselines.yaml").read_text())["baselines"]
    for name in baselines:
        (job,) = _jobs(res.stdout, f"eval_baseline_{name}")
        assert job["shell"].startswith("python -m tafs evaluate-pipeline")
    shells = [j["shell"] for j in _jobs(res.stdout, "download")]
    repos = [re.search(r"--hub (\S+)", s).group(1) for s in shells]
    assert len(repos) == len(set(repos)) and repos.count("black-forest-labs/FLUX.1-dev") == 1
    assert {"meta-llama/Llama-3.1-8B-Instruct", "ByteDance/Hyper-SD", "alimama-creative/FLUX.1-Turbo-Alpha"} <= \
        set(repos)
    assert "--allow Hyper-FLUX.1-dev-8steps-lora.safetensors" in " ".join(shells)


def test_stage_partition_reaches_every_rule_of_the_stage():
    """resources.eval.slurm_partition goes to eval_base and every eval_run* rule (the ablation runs' too)."""
    import yaml

    from tafs.dag import Plan

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["resources"]["eval"]["slurm_partition"] = "gpu"
    plan = Plan(cfg)
    assert plan.stage_resources("eval")["slurm_partition"] == "gpu"
    assert "slurm_partition" not in plan.stage_resources("train")
    # each run under its declared sampler: one rule per (samplers, NFEs) group
    assert [g[0] for g in plan.eval_run_groups()] == ["eval_run", "eval_run_ode", "eval_run_nfe8",
                                                      "eval_run_nfe8_annealed"]
