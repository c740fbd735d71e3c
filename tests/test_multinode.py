"""Multi-node training without a cluster: what Slurm is asked for (the executor plugin's own sbatch flags), the
train job's shell (a dry run), the launcher's reading of Slurm's environment, and the GPU-count check over
nodes. tests/test_multiprocess.py trains with 2 "nodes" on localhost."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml
from dag_utils import REPO, run_snakemake, scratch_workflow

from tafs.config import ConfigError
from tafs.dag import Plan
from tafs.job_launch import node_resources, tafs_launcher
from tafs.distributed import gpu_count_error
from tafs.launch import from_env, parse_first_host, rendezvous_port, split_argv

TRAIN = {"gpu": 4, "nodes": 2, "cpus_per_gpu": 6, "mem_mb": 9000, "runtime": 30}


# -- the launcher ----------------------------------------------------------------------------------------------


def test_rendezvous_port_is_a_function_of_the_job_id():
    assert rendezvous_port(0) == 20000 and rendezvous_port(19999) == 39999 and rendezvous_port(20000) == 20000
    assert rendezvous_port(8123456) == 20000 + 8123456 % 20000
    assert all(20000 <= rendezvous_port(j) < 40000 for j in range(0, 100000, 997))


@pytest.mark.parametrize("nodelist, first", [
    ("gpu07", "gpu07"), ("gpu[07-08,11],gpu20", "gpu07"), ("node[3,5]", "node3"), ("a1,b2", "a1"),
    ("n-[010-012]", "n-010"),
])
def test_first_host_of_a_node_list(nodelist, first):
    assert parse_first_host(nodelist) == first


def _slurm_env(**extra: str) -> dict[str, str]:
    return {"SLURM_NNODES": "2", "SLURM_NODEID": "1", "SLURM_JOB_ID": "4321", "SLURM_JOB_NODELIST": "gpu[07-08]",
            **extra}


def test_each_node_computes_the_same_rendezvous():
    nodes = [from_env({**_slurm_env(), "SLURM_NODEID": str(r)}, nproc_per_node=4) for r in (0, 1)]
    assert [n.node_rank for n in nodes] == [0, 1]
    assert {(n.nnodes, n.nproc_per_node, n.master_addr, n.master_port) for n in nodes} == {(2, 4, "gpu07", 24321)}
    cmd = nodes[1].command(["train", "--out", "o"])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert " ".join(cmd[3:]) == ("--nnodes 2 --node_rank 1 --nproc_per_node 4 --master_addr gpu07 --master_port 24321 "
                                 "-m tafs train --out o")


def test_master_addr_and_port_from_the_environment_win():
    node = from_env(_slurm_env(MASTER_ADDR="10.0.0.5", MASTER_PORT="29999"), nproc_per_node=1)
    assert (node.master_addr, node.master_port) == ("10.0.0.5", 29999)


@pytest.mark.parametrize("env, needle", [
    ({"SLURM_NODEID": "0"}, "SLURM_NNODES"),
    (_slurm_env(SLURM_NODEID="2"), "SLURM_NODEID=2"),
    ({k: v for k, v in _slurm_env().items() if k != "SLURM_JOB_NODELIST"}, "MASTER_ADDR"),
])
def test_a_launch_outside_slurm_says_what_is_missing(env, needle):
    with pytest.raises(SystemExit, match=needle):
        from_env(env, nproc_per_node=1)


def test_the_cli_wants_the_tafs_command_after_a_double_dash():
    assert split_argv(["--nproc-per-node", "2", "--", "train", "--x"]) == (["--nproc-per-node", "2"], ["train", "--x"])
    res = subprocess.run([sys.executable, "-m", "tafs", "launch", "--nproc-per-node", "2", "train"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode != 0 and "usage: python -m tafs launch" in res.stderr, res.stderr


# -- the GPU-count check over nodes ------------------------------------------------------------------------------


@pytest.mark.parametrize("visible", [4, 1])  # the node's 4 GPUs, or one per process
def test_gpu_count_ok_over_nodes(visible):
    assert gpu_count_error(8, visible, world_size=8, local_world_size=4) is None


@pytest.mark.parametrize("visible, world, local, hint", [
    (8, 8, 4, "each node runs 4 processes"),        # a node sees more GPUs than its processes
    (2, 8, 4, "each node runs 4 processes"),        # a node got 2 of its 4 GPUs
    (4, 4, 2, "resources.train.nodes x gpu (8)"),   # --nproc-per-node 2 instead of 4
])
def test_gpu_count_mismatch_over_nodes(visible, world, local, hint):
    msg = gpu_count_error(8, visible, world_size=world, local_world_size=local)
    assert msg is not None and hint in msg, msg


# -- what the job asks Slurm for ---------------------------------------------------------------------------------


def test_one_node_is_what_it_was():
    assert node_resources({"gpu": 4, "nodes": 1}) == {} and node_resources({"gpu": 4}) == {}
    assert tafs_launcher({"gpu": 4, "nodes": 1}).startswith("accelerate launch --multi_gpu --num_processes 4 ")


def test_nodes_need_gpus():
    with pytest.raises(ConfigError, match=r"resources.train.nodes = 2 needs resources.train.gpu >= 1"):
        node_resources({"gpu": 0, "nodes": 2})


class _Resources(dict):
    """Snakemake's job resources as the plugin reads them: .get(name) and attributes."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _sbatch(resources: dict, threads: int) -> str:
    """The sbatch command line the installed Slurm executor plugin builds for a job with these resources."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string
    from snakemake_executor_plugin_slurm.validation import validate_slurm_extra

    job = SimpleNamespace(resources=_Resources(resources), threads=threads)
    validate_slurm_extra(job)  # --gpus-per-node is not one of the options the plugin keeps for itself
    params = {"run_uuid": "u", "slurm_logfile": "l", "comment_str": "c", "account": "", "partition": "",
              "workdir": ""}
    return get_submit_command(job, params) + set_gres_string(job)


def test_the_sbatch_flags_of_a_two_node_job():
    """nodes: 2, gpu: 4 (per node), gpu_model h100 -> 2 nodes, 8 GPUs in all and 4 on each, one task a node, the
    CPUs per GPU; nothing turns the tasks into tasks per GPU. One node keeps its flags."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["resources"]["train"] = {**TRAIN, "gpu_model": "h100"}
    res = Plan(cfg).stage_resources("train")
    flags = _sbatch(res, threads=6).split()
    assert {"--nodes=2", "--ntasks=2", "--gpus=h100:8", "--gpus-per-node=h100:4", "--cpus-per-gpu=6",
            "--mem", "9000"} <= set(flags), flags
    assert not [f for f in flags if f.startswith(("--ntasks-per-gpu", "--gres", "--cpus-per-task"))], flags
    single = _sbatch(node_resources({}) or {"gpu": 4, "nodes": 1, "cpus_per_gpu": 6, "mem_mb": 9000}, threads=6)
    assert "--nodes=1" in single and "--gpus=4" in single and "--ntasks" not in single and "per-node" not in single


@pytest.fixture(scope="module")
def wf(tmp_path_factory):
    return scratch_workflow(tmp_path_factory.mktemp("multinode"))


def test_a_two_node_training_job_runs_srun_and_the_launcher(wf):
    """Dry run: resources.train {nodes: 2, gpu: 4} -> every train job is one launcher per node under srun,
    4 processes each, expecting 8 GPUs in all; evaluation cannot have nodes."""
    from test_cluster_config import _jobs

    res = run_snakemake(wf, "-n", "-p", "--cores", "64", configs=[{"resources": {"train": TRAIN}}])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    jobs = _jobs(res.stdout, "train")
    assert jobs
    for job in jobs:
        r = job["resources"]
        assert (r["gpu"], r["nodes"], r["tasks"], r["mpi"]) == ("8", "2", "2", "srun"), r
        assert "--gpus-per-node=4" in r["slurm_extra"], r
        assert job["shell"].startswith("srun --nodes=2 --ntasks-per-node=1 --cpus-per-task=24 --gpus-per-node=4 "
                                       "--kill-on-bad-exit=1 python -m tafs launch --nproc-per-node 4 -- train "), job
        assert "--expect-gpus 8" in job["shell"] and "--threads 6" in job["shell"]
    bad = run_snakemake(wf, "-n", "--cores", "1", configs=[{"resources": {"eval": {"gpu": 1, "nodes": 2}}}])
    assert bad.returncode != 0 and "nodes" in bad.stdout + bad.stderr
