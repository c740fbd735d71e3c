"""The README's commands run as written on this checkout: the short ones as they are, the DAG runs as dry runs
(`-n`, every job planned), and each long one is named with what covers it. A command added to the README fails the
test until it is put in one of the three lists."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from dag_utils import REPO, scratch_workflow

pytestmark = pytest.mark.slow

RUN = {"python -m tafs plan --configfile workflow/presets/paper_flux_pickapic.yaml"}
DRY = {
    ".venv/bin/snakemake --cores all",
    ".venv/bin/snakemake --cores all --configfile workflow/presets/tiny_sd3.yaml",
    "snakemake --cores all --profile slurm --configfile workflow/presets/paper_flux_pickapic.yaml",
}
LONG = {
    "bash scripts/setup.sh": "the set-up itself (CI's first step: .ci/run)",
    "bash scripts/test.sh": "the test suite itself (.ci/run)",
    "python bench/iteration_time.py --model assets/toy-base --repeats 3 --warmup 1":
        "a ~70 s benchmark (tests/test_bench.py runs its rows on a small budget)",
    ".venv/bin/mlflow ui --host 127.0.0.1 --port 5000 --workers 1 --backend-store-uri sqlite:///results/mlflow.db":
        "a server (tests/test_mlflow_server.py starts one on the same store layout)",
}


def readme_commands() -> list[str]:
    """Each command of the README's ```bash blocks (comments dropped, `a && b` split)."""
    text = (REPO / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                out += [c.strip() for c in line.split("&&")]
    return out


def _argv(command: str) -> list[str]:
    """The command with this interpreter for `python`, `.venv/bin/X` and `snakemake` (the README's venv)."""
    argv = shlex.split(command)
    head = argv[0].removeprefix(".venv/bin/")
    return [sys.executable] + (argv[1:] if head == "python" else ["-m", head, *argv[1:]])


def test_every_readme_command_is_covered():
    commands = readme_commands()
    assert len(commands) >= 8
    unknown = [c for c in commands if c not in RUN | DRY | set(LONG)]
    assert not unknown, f"README commands with no decision here (run / dry run / long): {unknown}"


@pytest.mark.parametrize("command", sorted(RUN | DRY))
def test_readme_command_runs(command, tmp_path):
    wf = scratch_workflow(tmp_path)
    argv = _argv(command) + (["-n"] if command in DRY else [])
    res = subprocess.run(argv, cwd=wf, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{command}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    if command in DRY:
        assert "Job stats" in res.stdout + res.stderr, res.stdout[-2000:]
