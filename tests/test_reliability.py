"""Bad input never costs a result, a killed DAG resumes to the same numbers, no secret lands in the results.

On a populated results folder, 30 bad inputs (config values at every level, method presets and ablations, every
kind of file the project reads) each fail before any job runs (or, for a CLI stage, before it writes anything),
with a last line that names the key or the file, and leave every file under results/ unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dag_utils import run_snakemake, scratch_workflow

pytestmark = pytest.mark.slow
SECRET = "hf_tafsSecretSentinel0123456789"
SMALL = {
    "results": "results", "report": False, "seeds": [0], "scorer": {"steps": 10},
    # a secret in the config itself (an unused reward's API key): redacted before any command line or file
    "reward_models": {"unifiedreward": {"url": "http://127.0.0.1:9/v1", "api_key": SECRET}},
    "train": {"iterations": 6, "prompts_per_iter": 2, "group_size": 2, "checkpoint_every": 1,
              "lora": {"rank": 4, "alpha": 8}},
    "eval": {"per_category": 1, "batch_size": 32},
    "sweep": {"base_nfe": [4], "base_samplers": ["ode"], "run_nfe": [4], "run_samplers": None},
    "tables": {"comparison": ["tafs_grpo"], "components": ["tafs_grpo"], "extra": [], "ablation_of": None,
               "main_nfe": 4, "table1_nfe": [4], "base_rows": [["ode", 4]],
               "table1": {"task": "toy_preference"}},  # one task: no toy_composition run
}


def _workflow(tmp: Path) -> Path:
    wf = scratch_workflow(tmp)
    (wf / "small.yaml").write_text(yaml.safe_dump(SMALL))
    return wf


def _checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    """The small DAG, uninterrupted, with HF_TOKEN set and an API key in the config (neither may be written)."""
    wf = _workflow(tmp_path_factory.mktemp("populated"))
    os.environ["HF_TOKEN"], old = SECRET, os.environ.get("HF_TOKEN")
    try:
        res = run_snakemake(wf, "--cores", "2", "--configfile", "small.yaml")
    finally:
        os.environ.pop("HF_TOKEN")
        if old is not None:
            os.environ["HF_TOKEN"] = old
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return wf


def test_no_secret_in_results(populated):
    files = [*(populated / "results").rglob("*"), *(populated / ".snakemake").rglob("*")]  # + Snakemake's records
    leaks = [p for p in files if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaks
    assert any((populated / "results").rglob("config.json")) and (populated / "results" / "mlflow.db").is_file()


def _write_bad_files(tmp: Path) -> None:
    (tmp / "garbled_model").mkdir()
    (tmp / "garbled_model" / "model_index.json").write_text('{"_class_name": "TafsToyPipeline",')
    files = {"empty": "", "garbled": '{"prompt": "a ring", "metadata": {"objects": [{"shape": "ring"}]}}\n{"prompt"\n',
             "plain": "a ring\n"}
    for name, text in files.items():
        (tmp / f"{name}.{'txt' if name == 'plain' else 'jsonl'}").write_text(text)


def _bad_cases(tmp: Path) -> dict[str, tuple[dict, str]]:
    """name -> (config overrides, text the last line must contain)."""
    garbled_index = tmp / "garbled_model"

    def task(prompts: str, rewards=None) -> dict:
        return {"task": "mine", "tasks": {"mine": {"prompts": {"train": prompts, "test": prompts},
                                                   "rewards": rewards or {"toy_dense": 1.0}}}}

    def preset(name: str, train: dict) -> dict:
        return {"methods": {name: {"train": train}}}

    return {
        "train unknown key": ({"train": {"lerning_rate": 0.1}}, "train: Additional properties are not allowed"),
        "train wrong type": ({"train": {"lr": "fast"}}, "train.lr: 'fast' is not of type 'number'"),
        "train sampler": ({"train": {"method": {"sampler": "ode"}}}, "train.method.sampler: 'ode' is not one of"),
        "advantage mode": ({"train": {"advantage": {"mode": "sum"}}}, "train.advantage.mode: 'sum' is not one of"),
        "all-zero weights": ({"train": {"advantage": {"rewards": {"toy_dense": 0.0, "clip": 0.0}}}}, "not all zero"),
        "preset sampler": (preset("flow_grpo", {"method": {"sampler": "flow_sdee"}}),
                           "methods.flow_grpo.train.method.sampler: 'flow_sdee' is not one of"),
        "preset n_adv": (preset("tafs_grpo", {"advantage": {"n_adv": 5}}),
                         "methods.tafs_grpo (with `train:`), run 'tafs_grpo' (seed 0): advantage.n_adv = 5 exceeds"),
        "preset minibatches": (preset("tafs_grpo", {"minibatches": 9}), "minibatches = 9 exceeds the 4 samples"),
        "preset unknown key": (preset("tafs_grpo", {"lr_typo": 1}), "methods.tafs_grpo.train: Additional properties are not "
                                                                    "allowed ('lr_typo' was unexpected)"),
        "ablation n_adv": ({"tables": {"ablation_of": "tafs_grpo"}, "ablations": {"n_adv": [4]}},
                           "ablations.n_adv: [4] exceed the 3 scored steps"),
        "ablation reward name": ({"tables": {"ablation_of": "tafs_grpo"},
                                  "ablations": {"reward_mixes": {"bad": {"clipp": 1.0}}}},
                                 "ablations.reward_mixes.bad: unknown reward(s) ['clipp']"),
        "ablation negative weight": ({"tables": {"ablation_of": "tafs_grpo"},
                                      "ablations": {"reward_mixes": {"neg": {"clip": -1.0}}}},
                                     "ablations.reward_mixes.neg: reward weights must be numbers >= 0"),
        "unknown method": ({"tables": {"comparison": ["tafs_grpo", "nope"]}}, "tables.comparison: unknown method 'nope'"),
        "table nfe": ({"tables": {"main_nfe": 16}}, "sweep.run_nfe"),
        "base row": ({"tables": {"base_rows": [["annealed", 4]]}}, "tables.base_rows: the base model at (annealed, 4"),
        "sweep nfe": ({"sweep": {"base_nfe": [4, 0]}}, "sweep.base_nfe.1: 0 is less than the minimum of 1"),
        "eval value": ({"eval": {"per_category": -1}}, "eval.per_category: -1 is less than the minimum"),
        "seeds": ({"seeds": []}, "seeds: [] should be non-empty"),
        "figure metric": ({"figure4": {"metric": "strict"}}, "figure4.metric: 'strict' is not a metric"),
        "model kind": ({"model": {"kind": "sdxl"}}, "model: Additional properties are not allowed ('kind'"),
        "model folder": ({"model": {"pretrained": str(tmp / "no_model")}}, "model_index.json not found"),
        "model_index": ({"model": {"pretrained": str(garbled_index)}}, "model_index.json: not a JSON object"),
        "model dtype": ({"model": {"dtype": "fp8"}}, "model.dtype: 'fp8' is not one of"),
        "task name": ({"task": "geneval_typo"}, "task: unknown task 'geneval_typo'"),
        "empty prompts": (task(str(tmp / "empty.jsonl")), "empty.jsonl: no prompts (the file is empty)"),
        "garbled prompts": (task(str(tmp / "garbled.jsonl")), "garbled.jsonl:2: not valid JSON"),
        "missing metadata": (task(str(tmp / "plain.txt")), "plain.txt:1: prompt 'a ring' lacks metadata"),
        "task reward": (task(str(tmp / "plain.txt"), {"pickscroe": 1.0}), "tasks.mine.rewards: unknown reward(s)"),
        "resources": ({"resources": {"train": {"gpu": -1}}}, "resources.train.gpu: -1 is less than the minimum"),
        "baseline nfe": ({"baselines": {"x": {"model": str(garbled_index), "nfe": [0]}}},
                         "baselines.x.nfe.0: 0 is less than the minimum of 1"),
        "tracking uri": ({"tracking": {"uri": "localhost:5000"}}, "tracking.uri: 'localhost:5000' does not match"),
        "hub model": ({"model": {"pretrained": {"hub": "not a repo!"}}}, "model.pretrained.hub: 'not a repo!'"),
    }


# One case of each kind goes through `snakemake` (the Snakefile's schema check, the DAG-time Plan checks, a model
# folder, a task's prompt file): the others through the same two functions in-process (tafs.planning.command.load_config
# = the Snakefile's merge and schema validation, then tafs.dag.Plan = common.smk's checks), 4 s of startup each saved.
VIA_SNAKEMAKE = ("train unknown key", "preset n_adv", "model_index", "garbled prompts", "tracking uri")


def _bad_file(tmp_path: Path, case: str) -> tuple[Path, str]:
    _write_bad_files(tmp_path)
    overrides, needle = _bad_cases(tmp_path)[case]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SMALL, **overrides} if "tables" not in overrides else
                                  {**SMALL, **overrides, "tables": {**SMALL["tables"], **overrides["tables"]}}))
    return bad, needle


@pytest.mark.parametrize("case", [c for c in _bad_cases(Path("/nonexistent")) if c not in VIA_SNAKEMAKE])
def test_bad_config_fails_the_dag_checks(populated, tmp_path, case, monkeypatch):
    from tafs.config import ConfigError
    from tafs.dag import Plan
    from tafs.planning.command import load_config

    bad, needle = _bad_file(tmp_path, case)
    monkeypatch.chdir(populated)
    with pytest.raises((ConfigError, ValueError, FileNotFoundError)) as err:
        Plan(load_config([str(bad)], populated))
    assert needle in str(err.value), f"{case}: {needle!r} not in\n{err.value}"


@pytest.mark.parametrize("case", VIA_SNAKEMAKE)
def test_bad_config_fails_before_any_job_and_changes_nothing(populated, tmp_path, case):
    bad, needle = _bad_file(tmp_path, case)
    before = _checksums(populated / "results")
    res = run_snakemake(populated, "--cores", "1", "--configfile", str(bad))
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-2000:]
    assert needle in out, f"{case}: {needle!r} not in\n{out[-1500:]}"
    # the last line says what is wrong: the message itself, or (several schema errors) one of its lines
    assert _last_line(res.stderr).strip().startswith(("error:", needle.split(":")[0])), out[-1500:]
    assert _checksums(populated / "results") == before


def test_broken_config_yaml_names_file_and_line(populated):
    cfg = populated / "config.yaml"
    original = cfg.read_text()
    before = _checksums(populated / "results")
    try:
        cfg.write_text(original.replace("threads: 1", "threads: [1", 1))
        res = run_snakemake(populated, "--cores", "1", "--configfile", "small.yaml")
        assert res.returncode != 0 and "config.yaml:" in _last_line(res.stderr) and "not valid YAML" in \
            _last_line(res.stderr), res.stderr[-1500:]
    finally:
        cfg.write_text(original)
    assert _checksums(populated / "results") == before


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tafs", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_corrupt_files_read_by_cli_stages_name_the_file(populated, tmp_path):
    results = populated / "results"
    before = _checksums(results)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    for f in (results / "runs/tafs_grpo/seed0/adapter").iterdir():
        data = f.read_bytes()
        (adapter / f.name).write_bytes(data[: len(data) // 2] if f.suffix == ".safetensors" else data)
    ckpt = tmp_path / "ckpt"
    src = next((results / "checkpoints/runs/tafs_grpo/seed0").glob("checkpoint-*.pt"))
    ckpt.mkdir()
    (ckpt / src.name).write_bytes(src.read_bytes()[:1000])
    grid = tmp_path / "manifest.json"
    grid.write_text((results / "manifest.json").read_text()[:-40])
    cfg_json = tmp_path / "config.json"
    cfg_json.write_text("{\n  \"results\": \"results\",\n  oops\n}\n")
    train_cfg = json.loads((results / "runs/tafs_grpo/seed0/train_summary.json").read_text())["config"]
    cases = [
        (["evaluate", "--model", "assets/toy-base", "--adapter", str(adapter), "--prompts",
          str(results / "prompts/test.jsonl"), "--nfe", "2", "--out", str(tmp_path / "out1")], "adapter_model"),
        (["train", "--model", "assets/toy-base", "--prompts", str(results / "prompts/train.jsonl"), "--cfg",
          json.dumps(train_cfg), "--out", str(tmp_path / "out2"), "--ckpt-dir", str(ckpt)], src.name),
        (["tables", "--manifest", str(grid), "--results", str(results), "--out", str(tmp_path / "out3"),
          "--figure", "none"], "manifest.json:"),
        (["mlflow-ingest", "--results", str(results), "--uri", f"sqlite:///{tmp_path}/m.db", "--config",
          str(cfg_json), "--out", str(tmp_path / "out4.json")], "config.json:3:"),
        (["evaluate", "--model", str(tmp_path / "nomodel"), "--prompts", str(results / "prompts/test.jsonl"),
          "--nfe", "2", "--out", str(tmp_path / "out5")], "model_index.json not found"),
    ]
    for args, needle in cases:
        res = _cli(*args, cwd=populated)
        last = _last_line(res.stderr)
        assert res.returncode != 0 and needle in last and last.startswith("error:"), (args[0], res.stderr[-1500:])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("out")]  # nothing written
    assert _checksums(results) == before


def test_killed_dag_resumes_to_the_same_numbers(populated, tmp_path):
    """SIGKILL the whole DAG while the training job is half-way, re-run it: the run resumes from its last
    checkpoint and every number equals the uninterrupted run's."""
    from tafs.report.compare import compare

    wf = _workflow(tmp_path)
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "small.yaml"]
    proc = subprocess.Popen(cmd, cwd=wf, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    curve = wf / "results/checkpoints/runs/tafs_grpo/seed0/metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if curve.is_file() and len(curve.read_text().splitlines()) >= 3:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the DAG ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (wf / "results/runs/tafs_grpo/seed0/train_summary.json").exists()
    # A killed Snakemake leaves its lock: unlock, then the same command (README, "When something goes wrong").
    assert run_snakemake(wf, "--unlock", "--cores", "1", "--configfile", "small.yaml").returncode == 0
    res = run_snakemake(wf, "--cores", "2", "--configfile", "small.yaml")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((wf / "results/runs/tafs_grpo/seed0/train_summary.json").read_text())
    assert summary["resumed"] is True and summary["iterations"] == 6
    rep = compare(populated / "results", wf / "results", tol=1e-5)
    assert not rep.diffs and not rep.missing and rep.compared, rep.diffs[:10] + rep.missing[:10]
