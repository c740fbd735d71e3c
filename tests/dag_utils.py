"""Helpers to run the project's Snakemake DAG in a scratch copy of the workflow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def scratch_workflow(tmp: Path) -> Path:
    """Copy Snakefile, config.yaml, environment.yml (every rule's `conda:` file, read by Snakemake when a job ends),
    workflow/, link assets/ and the ``slurm`` profile into ``tmp`` (results stay inside)."""
    for name in ("Snakefile", "config.yaml", "environment.yml"):
        shutil.copy(REPO / name, tmp / name)
    shutil.copytree(REPO / "workflow", tmp / "workflow")
    (tmp / "assets").symlink_to(REPO / "assets")  # the shipped toy base (config.yaml model.pretrained)
    for link in ("slurm", "profiles"):  # `--profile slurm` finds ./slurm; the workflow profile profiles/default
        if (REPO / link).is_symlink():
            (tmp / link).symlink_to(os.readlink(REPO / link))
    return tmp


def run_snakemake(workdir: Path, *args: str, configs: list[dict] | None = None,
                  timeout: int = 900) -> subprocess.CompletedProcess:
    """``snakemake`` in ``workdir`` with extra config files written from dicts."""
    extra = []
    for i, cfg in enumerate(configs or []):
        path = workdir / f"extra_{i}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        extra.append(str(path))
    cmd = [sys.executable, "-m", "snakemake", *args]
    if extra:
        cmd += ["--configfile", *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env)
