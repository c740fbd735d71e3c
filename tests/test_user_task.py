"""A task of the user's own, defined only in config with a 20-line prompt file: it trains and evaluates
through the DAG; editing the file re-plans its training; bad prompt files and names fail before any job.
"""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import yaml

from dag_utils import run_snakemake, scratch_workflow

PROMPTS = "data/my_prompts.jsonl"


def _user_config(prompts: str = PROMPTS, **task) -> dict:
    return {
        "results": "results", "report": False, "task": "my_shapes",
        "tasks": {"my_shapes": {
            "description": "twenty shape prompts of my own",
            "prompts": {"train": prompts, "test": prompts},
            "rewards": {"toy_dense": 1.0},
            "metrics": {"dense": {"reward": "toy_dense", "domain": "in", "label": "My dense", "percent": True},
                        "strict": {"reward": "toy_correct", "domain": "out"}},
            "category_metric": "strict", **task}},
        "seeds": [0],
        "train": {"iterations": 2, "prompts_per_iter": 2, "group_size": 2, "checkpoint_every": 1,
                  "lora": {"rank": 4, "alpha": 8}},
        "eval": {"per_category": None, "batch_size": 32},
        "sweep": {"base_nfe": [4], "base_samplers": ["ode"], "run_nfe": [4], "run_samplers": ["ode", "annealed"]},
        "tables": {"comparison": ["tafs_grpo"], "components": ["tafs_grpo"], "extra": [], "ablation_of": None,
                   "main_nfe": 4, "table1_nfe": [4], "base_rows": [["ode", 4]]},
        "figure4": {"metric": "dense"},
    }


def _write_prompts(path):
    """20 lines in the prompt-file format: the text, the toy checker's metadata, a category."""
    from tafs.tasks.toy import toy_prompts

    lines = []
    for p in toy_prompts("train")[::6][:20]:
        lines.append(json.dumps({"prompt": p.text, "metadata": dict(p.metadata), "category": p.category}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    assert len(lines) == 20


def _snapshot(root):
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(root.rglob("*")) if p.is_file() and ".snakemake" not in p.parts}


def _jobs(stdout: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> count."""
    out, on = {}, False
    for line in stdout.splitlines():
        if line.startswith("job "):
            on = True
        elif on and line.strip() and not line.startswith("---"):
            name, *rest = line.split()
            if name == "total":
                break
            out[name] = int(rest[0])
    return out


@pytest.fixture(scope="module")
def wf(tmp_path_factory):
    wf = scratch_workflow(tmp_path_factory.mktemp("user_task"))
    _write_prompts(wf / PROMPTS)
    (wf / "user.yaml").write_text(yaml.safe_dump(_user_config()))
    res = run_snakemake(wf, "--cores", "2", "--configfile", "user.yaml")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return wf


@pytest.mark.slow
def test_user_task_trains_and_evaluates_through_the_dag(wf):
    results = wf / "results"
    written = [json.loads(x) for x in (results / "prompts" / "train.jsonl").read_text().splitlines()]
    mine = [json.loads(x) for x in (wf / PROMPTS).read_text().splitlines()]
    assert written == mine  # the prompts rule wrote the user's prompts, metadata and categories
    summary = json.loads((results / "runs/tafs_grpo/seed0/train_summary.json").read_text())
    assert summary["iterations"] == 2 and summary["config"]["advantage"]["rewards"] == {"toy_dense": 1.0}
    assert summary["prompts"].endswith("prompts/train.jsonl")
    rows = [json.loads(x) for x in (results / "runs/tafs_grpo/seed0/metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1] and "reward/toy_dense/final_mean" in rows[0]
    m = json.loads((results / "eval/runs/tafs_grpo/seed0/annealed/nfe4/metrics.json").read_text())
    assert m["n"] == 20 and set(m["metrics"]) == {"dense", "strict"} and "chance" not in m
    cats = sorted({x["category"] for x in mine})
    assert sorted(m["metrics"]["strict"]["by_category"]) == cats
    t1 = pd.read_csv(results / "tables" / "table1.csv")
    assert list(t1[t1["declared"]]["method"]) == ["Base", "TAFS-GRPO"]  # each with its declared sampler
    assert list(t1[t1["declared"]]["sampler"]) == ["ode", "annealed"]
    assert sorted(t1[t1["method"] == "TAFS-GRPO"]["sampler"]) == ["annealed", "ode"]  # the CSV has both
    assert {"dense", "strict", *(f"strict_{c}" for c in cats)} <= set(t1.columns)
    assert "My dense (%) [in-domain]" in (results / "tables" / "table1.md").read_text()
    assert (results / "figures" / "figure4.png").stat().st_size > 5000


def _plan(wf) -> dict[str, int]:
    res = run_snakemake(wf, "-n", "--cores", "1", "--configfile", "user.yaml")
    assert res.returncode == 0, res.stdout + res.stderr
    return _jobs(res.stdout)


@pytest.mark.slow
def test_editing_the_train_prompt_file_replans_training(wf):
    """Snakemake 9 compares the checksum of small input files: a touched but unchanged file re-runs nothing,
    an edited one re-runs what reads it (the training job, its evaluation, the tables)."""
    assert _plan(wf) == {}  # up to date
    train = wf / "results" / "prompts" / "train.jsonl"
    original = train.read_text()
    os.utime(train)
    assert _plan(wf) == {}  # same content: nothing to re-run
    train.write_text(original + '{"prompt": "a ring", "metadata": {"objects": [{"shape": "ring"}]}}\n')
    jobs = _plan(wf)
    assert jobs.get("train") == 1 and jobs.get("eval_run") == 1, jobs
    assert "eval_base" not in jobs and "prompts" not in jobs, jobs  # the base never reads train prompts
    train.write_text(original)
    assert _plan(wf) == {}
    mine = wf / PROMPTS  # the user's own file: both splits are rewritten and everything follows
    mine.write_text(mine.read_text().replace("a square", "a big square", 1))
    jobs = _plan(wf)
    assert jobs.get("prompts") == 2 and jobs.get("train") == 1 and jobs.get("eval_base") == 1, jobs


BAD = {
    "empty": ("", "no prompts (the file is empty)"),
    "garbled": ('{"prompt": "a ring", "metadata": {"objects": [{"shape": "ring"}]}}\n\n{"prompt": "a cross",\n',
                ":3: not valid JSON"),
    "no_metadata": ("a ring\na cross\n", ":1: prompt 'a ring' lacks metadata ['objects'] that the reward 'toy_dense'"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD) + ["unknown_task", "unknown_reward", "unknown_metric_reward"])
def test_bad_input_fails_before_any_job_and_changes_nothing(wf, case):
    before = _snapshot(wf / "results")
    cfg = _user_config()
    if case in BAD:
        text, needle = BAD[case]
        name = f"data/{case}.{'txt' if case == 'no_metadata' else 'jsonl'}"
        (wf / name).write_text(text)
        cfg = _user_config(prompts=name)
        needle = name + (needle if needle.startswith(":") else f": {needle}")
    elif case == "unknown_task":
        cfg["task"], needle = "my_shapez", "task: unknown task 'my_shapez'"
    elif case == "unknown_reward":
        cfg["tasks"]["my_shapes"]["rewards"] = {"toy_dens": 1.0}
        needle = "tasks.my_shapes.rewards: unknown reward(s) ['toy_dens']"
    else:
        cfg["tasks"]["my_shapes"]["metrics"]["strict"]["reward"] = "gen_eval"
        needle = "tasks.my_shapes.metrics.strict.reward: unknown reward(s) ['gen_eval']"
    (wf / "bad.yaml").write_text(yaml.safe_dump(cfg))
    res = run_snakemake(wf, "--cores", "1", "--configfile", "bad.yaml")
    out = res.stdout + res.stderr
    assert res.returncode != 0 and needle in out, out[-3000:]
    assert _snapshot(wf / "results") == before
