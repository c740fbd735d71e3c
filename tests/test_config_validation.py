"""A bad config fails before any job runs, naming the key (schema validation in the Snakefile)."""

import pytest

from dag_utils import run_snakemake, scratch_workflow


@pytest.fixture(scope="module")
def wf(tmp_path_factory):
    return scratch_workflow(tmp_path_factory.mktemp("wf"))


@pytest.mark.parametrize("bad, needle", [
    ({"pretrain": {"stepz": 10}}, "stepz"),
    ({"pretrain": {"steps": "ten"}}, "steps"),
    ({"sweep": {"base_nfe": [4, 0]}}, "base_nfe"),
    ({"eval": {"per_category": -1}}, "per_category"),
    ({"model": {"kind": "sdxl"}}, "kind"),  # model.kind is gone: the loader reads model_index.json
])
def test_bad_config_fails_before_any_job(wf, bad, needle):
    res = run_snakemake(wf, "-n", "--cores", "1", configs=[bad])
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert needle in out, out
    assert "validat" in out.lower(), out
    assert not (wf / "results").exists()  # nothing ran


def test_good_config_dry_runs(wf):
    res = run_snakemake(wf, "-n", "--cores", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    # the shipped base is used; the task builds its scorer (clip: {path: null})
    assert "name=base" not in res.stdout and "name=clip_scorer" in res.stdout
    res = run_snakemake(wf, "-n", "--cores", "1", configs=[{"model": {"pretrained": None}}])
    assert res.returncode == 0 and "name=base" in res.stdout, res.stdout + res.stderr


def test_snakemake_lint_reports_nothing(wf):
    """`snakemake --lint` on the default config (issue 25): every rule names its software (`conda:` environment.yml),
    shell commands take only rule values (params, not globals), path params are derived, not hardcoded prefixes, no
    function sits beside rules, no environment variable is read unasserted. Snakemake exits 1 on any lint; the text
    is checked too. The smoke preset's rules are a subset of these; the rules only some configs have (download,
    fetch_data, tiny_base, tiny_reward, eval_baseline_*) share the same helpers (CONDA_ENV, logged)."""
    res = run_snakemake(wf, "--lint")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "Lints for" not in out and "in a good condition" in out, out


# Bad grids (unknown method, a table NFE the sweep lacks, N_adv beyond the scored steps) fail before any job:
# tests/test_reliability.py (its bad-config cases, one of each kind through `snakemake`).


def test_jobs_use_snakemakes_interpreter_without_an_active_venv(tmp_path):
    """The README runs `.venv/bin/snakemake` without activating the venv: jobs must still find `tafs`."""
    import os
    import subprocess
    import sys

    wf = scratch_workflow(tmp_path)  # its own folder: the shared `wf` must stay without results/
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # no venv on PATH
    res = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "results/prompts/test.jsonl"],
                         cwd=wf, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert (wf / "results" / "prompts" / "test.jsonl").read_text().count("\n") > 10
