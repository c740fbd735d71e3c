"""``python -m tafs launch --nproc-per-node G -- train ...``: one node's share of a multi-node training.

With ``resources.train.nodes`` N > 1 the train rule runs, inside the job's Slurm allocation,
``srun --nodes=N --ntasks-per-node=1 ... python -m tafs launch --nproc-per-node G -- train ...``: one copy of
this command per node. Each copy reads the Slurm environment of its step and replaces itself with
``torchrun --nnodes N --node_rank <SLURM_NODEID> --nproc_per_node G --master_addr <first node>
--master_port <port> -m tafs train ...``, so the N x G processes are one training (tafs/train/shard.py).

Nothing is exchanged between the nodes before torchrun's rendezvous, so every node must compute the same
address and port on its own:

- the address is ``MASTER_ADDR`` when set, else the first host of the step's node list
  (``scontrol show hostnames``; node 0 of the step is that host, and it hosts torchrun's store);
- the port is ``MASTER_PORT`` when set, else ``20000 + SLURM_JOB_ID % 20000`` (20000-39999: below the
  Linux ephemeral range, and two jobs clash only when their ids differ by a multiple of 20000 and they share
  their first node).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass

PORT_BASE = 20000
PORT_SPAN = 20000


def rendezvous_port(job_id: int) -> int:
    """The port every node of Slurm job ``job_id`` agrees on without talking: 20000 + job_id % 20000."""
    return PORT_BASE + job_id % PORT_SPAN


def parse_first_host(nodelist: str) -> str:
    """The first host of a Slurm node list such as ``gpu[07-08,11],gpu20`` -> ``gpu07`` (what
    ``scontrol show hostnames`` prints first; used where scontrol is not installed)."""
    m = re.match(r"\s*([^,\[\s]+)(?:\[([^\]]+)\])?", nodelist)
    if not m:
        raise ValueError(f"cannot read a host from the Slurm node list {nodelist!r}")
    prefix, ranges = m.group(1), m.group(2)
    return prefix + (re.split(r"[-,]", ranges)[0] if ranges else "")


def first_host(nodelist: str) -> str:
    """The first host of a node list, by ``scontrol show hostnames`` when there is an scontrol."""
    scontrol = shutil.which("scontrol")
    if scontrol:
        out = subprocess.run([scontrol, "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
        hosts = out.stdout.split()
        if hosts:
            return hosts[0]
    return parse_first_host(nodelist)


@dataclass(frozen=True)
class NodeLaunch:
    """Where this node stands in a launch of ``nnodes`` x ``nproc_per_node`` processes."""

    nnodes: int
    node_rank: int
    nproc_per_node: int
    master_addr: str
    master_port: int

    def command(self, tafs_args: list[str]) -> list[str]:
        """torchrun (as ``python -m torch.distributed.run``, the same interpreter) running ``python -m tafs``."""
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(self.nnodes),
                "--node_rank", str(self.node_rank), "--nproc_per_node", str(self.nproc_per_node),
                "--master_addr", self.master_addr, "--master_port", str(self.master_port),
                "-m", "tafs", *tafs_args]


def _int_env(env: Mapping[str, str], name: str) -> int:
    value = env.get(name)
    if value is None or not value.strip().isdigit():
        raise SystemExit(f"error: tafs launch needs ${name} (an integer; set by srun inside a Slurm job), "
                         f"got {value!r}: run it as `srun --nodes=N --ntasks-per-node=1 python -m tafs launch ...`")
    return int(value)


def from_env(env: Mapping[str, str], nproc_per_node: int) -> NodeLaunch:
    """This node's launch from Slurm's step environment (SLURM_NNODES, SLURM_NODEID, SLURM_JOB_ID, the node
    list), with MASTER_ADDR / MASTER_PORT taking precedence when set."""
    nnodes, rank = _int_env(env, "SLURM_NNODES"), _int_env(env, "SLURM_NODEID")
    if not 0 <= rank < nnodes:
        raise SystemExit(f"error: SLURM_NODEID={rank} is not a node of SLURM_NNODES={nnodes}")
    if nproc_per_node < 1:
        raise SystemExit(f"error: --nproc-per-node must be >= 1, got {nproc_per_node}")
    addr = env.get("MASTER_ADDR")
    if not addr:
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if not nodelist:
            raise SystemExit("error: tafs launch needs $MASTER_ADDR or a Slurm node list ($SLURM_JOB_NODELIST)")
        addr = first_host(nodelist)
    port = int(env["MASTER_PORT"]) if env.get("MASTER_PORT") else rendezvous_port(_int_env(env, "SLURM_JOB_ID"))
    return NodeLaunch(nnodes, rank, nproc_per_node, addr, port)


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(launcher options, the tafs command after ``--``)."""
    if "--" not in argv:
        raise SystemExit("error: usage: python -m tafs launch --nproc-per-node G -- train ...")
    i = argv.index("--")
    if not argv[i + 1:]:
        raise SystemExit("error: tafs launch: nothing to run after `--`")
    return argv[:i], argv[i + 1:]


def main(argv: list[str] | None = None) -> None:
    own, tafs_args = split_argv(list(sys.argv[1:] if argv is None else argv))
    p = argparse.ArgumentParser(prog="tafs launch", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nproc-per-node", type=int, required=True, help="processes (= GPUs) on this node")
    args = p.parse_args(own)
    cmd = from_env(os.environ, args.nproc_per_node).command(tafs_args)
    print("tafs launch: " + " ".join(cmd[:16]) + " ...", file=sys.stderr, flush=True)  # in the job log
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
