"""The paper's presets (workflow/presets/paper_*.yaml) plan on a machine without weights, network or Slurm
controller: `snakemake -n --profile slurm` builds every job kind (downloads, prompts, training runs x seeds,
evaluation sweeps, Table 1's baselines, tables, MLflow ingest) with GPUs on the GPU stages only, and the job
counts follow from each preset's seeds, methods, ablations and sweep. And `python -m tafs plan` on one preset."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from dag_utils import REPO, scratch_workflow

from tafs.planning import command as tafs_plan
from tafs.config import deep_merge, load_config_file, merge_defaults
from tafs.tasks.paper import TASKS

PRESETS = {  # preset -> the config files of its command (Table 1's baselines come with the GenEval presets)
    "paper_sd3_geneval": ["workflow/presets/paper_sd3_geneval.yaml", "workflow/presets/table1_baselines.yaml"],
    "paper_flux_geneval": ["workflow/presets/paper_flux_geneval.yaml", "workflow/presets/table1_baselines.yaml"],
    "paper_flux_pickapic": ["workflow/presets/paper_flux_pickapic.yaml"],
}
PLAN_PRESET = "paper_flux_pickapic"
LOCAL = ("config_snapshot", "download", "fetch_data", "grid_manifest", "tables", "mlflow_ingest")


def merged(files: list[str]) -> dict:
    given: dict = {}
    for f in files:
        given = deep_merge(given, load_config_file(str(REPO / f)))
    return merge_defaults(load_config_file(str(REPO / "config.yaml")), given)


def hub_models(obj) -> set[tuple[str, str]]:
    """Every (repository, revision) the config names anywhere: what the download rule fetches, once each."""
    if isinstance(obj, dict):
        own = {(obj["hub"], obj.get("revision", "main"))} if isinstance(obj.get("hub"), str) else set()
        return own.union(*(hub_models(v) for v in obj.values()))
    if isinstance(obj, list):
        return set().union(*(hub_models(v) for v in obj))
    return set()


def distinct_runs(cfg: dict) -> int:
    """Methods of the tables plus the ablations around `ablation_of`, less those with the same training config:
    N_annealed = K and N_adv = train's n_adv are that method's run, N_adv = 1 is "w/o Step Adv.", a reward mix
    equal to the task's rewards is the method's run too."""
    t, ab = cfg["tables"], cfg.get("ablations", {})
    runs = set(t["comparison"]) | set(t["components"]) | set(t.get("extra", []))
    if t.get("ablation_of"):
        k, n_adv = cfg["train"]["method"]["n_annealed"], cfg["train"]["advantage"]["n_adv"]
        runs |= {f"k{v}" for v in ab.get("n_annealed", []) if v != k}
        runs |= {f"adv{v}" for v in ab.get("n_adv", []) if v != n_adv and not (v == 1 and "no_step_adv" in runs)}
        runs |= {f"mix-{m}" for m, w in ab.get("reward_mixes", {}).items() if w != TASKS[cfg["task"]].rewards}
    return len(runs)


def expected_jobs(cfg: dict) -> dict[str, int]:
    runs = distinct_runs(cfg) * len(cfg["seeds"])
    # one job per run and seed (every sampler): Table 1-2 / Figure 4's runs over sweep.run_nfe (rule eval_run), the
    # ablation runs at the tables' NFE only (rule eval_run_nfe8); one job for the base
    swept = len(set(cfg["tables"]["comparison"])) * len(cfg["seeds"])
    out = {"download": len(hub_models(cfg)), "fetch_data": len(TASKS[cfg["task"]].remote_files()), "prompts": 2,
           "train": runs, "eval_run": swept, f"eval_run_nfe{cfg['tables']['main_nfe']}": runs - swept,
           "eval_base": 1,
           "config_snapshot": 1, "grid_manifest": 1, "tables": 1, "mlflow_ingest": 1}
    out.update({f"eval_baseline_{b}": 1 for b in cfg.get("baselines") or {}})
    return {rule: n for rule, n in out.items() if n}


def jobs_of(stdout: str) -> dict[str, list[dict]]:
    """rule -> (resources, shell command) of each job of a `-n -p` dry run."""
    out: dict[str, list[dict]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \S+:)", stdout):
        head = re.match(r"(?:local)?rule (\S+):", block)
        if head and head.group(1) != "all":
            res = re.search(r"resources: (.*)", block)
            cmd = re.search(r"Shell command: (.*)", block)
            out.setdefault(head.group(1), []).append({
                "resources": dict(kv.split("=", 1) for kv in res.group(1).split(", ")) if res else {},
                "shell": cmd.group(1) if cmd else ""})
    return out


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """The three slurm-profile dry runs and `tafs plan --json`, side by side (each takes ~10 s to start)."""
    wf = scratch_workflow(tmp_path_factory.mktemp("paper"))
    procs = {name: subprocess.Popen([sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "--profile", "slurm",
                                     "--configfile", *files], cwd=wf, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True) for name, files in PRESETS.items()}
    procs["plan"] = subprocess.Popen([sys.executable, "-m", "tafs", "plan", "--json", "--directory", str(wf),
                                      "--configfile", *[str(wf / f) for f in PRESETS[PLAN_PRESET]]], cwd=wf,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=600)
        out[name] = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    return out


@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_plans_every_job_kind(dry_runs, preset):
    res = dry_runs[preset]
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert re.search(r"Using profiles? slurm", res.stdout + res.stderr)
    cfg = merged(PRESETS[preset])
    jobs = jobs_of(res.stdout)
    assert {rule: len(j) for rule, j in jobs.items()} == expected_jobs(cfg)
    shells = " ".join(j["shell"] for j in jobs["download"])
    assert f"--hub {cfg['model']['pretrained']['hub']} " in shells and "HPSv2" in shells
    assert "--hub CodeGoat24/UnifiedReward-qwen-7b" in shells and "*.safetensors" in shells


@pytest.mark.parametrize("preset", list(PRESETS))
def test_gpus_only_on_gpu_stages(dry_runs, preset):
    cfg = merged(PRESETS[preset])
    jobs = jobs_of(dry_runs[preset].stdout)
    n = cfg["resources"]["train"]["gpu"]
    assert n > 0
    for job in jobs["train"]:
        r, shell = job["resources"], job["shell"]
        assert (r["gpu"], r["runtime"], r["nodes"]) == (str(n), str(cfg["resources"]["train"]["runtime"]), "1")
        assert shell.startswith(f"accelerate launch --multi_gpu --num_processes {n} ") and f"--expect-gpus {n}" in shell
        assert '"resolution": 512' in shell and '"group_size": 48' in shell and '"prompts_per_iter": 24' in shell
    evals = [j for rule, js in jobs.items() if rule.startswith("eval_") for j in js]
    assert evals and all(j["resources"]["gpu"] == "1" for j in evals)
    assert all('"resolution": 1024' in j["shell"] for j in jobs["eval_run"] + jobs["eval_base"])
    assert all("gpu" not in j["resources"] and "cpus_per_task" in j["resources"] for j in jobs["prompts"])
    assert all("gpu" not in j["resources"] for rule in LOCAL for j in jobs.get(rule, []))


def test_pickapic_grid_is_the_papers():
    """Tables 2-7: the four methods, the two component ablations, N_annealed 1/5, N_adv 2 and Table 6's reward
    models (the toy world's reward mixes are replaced, not merged in)."""
    cfg = merged(PRESETS["paper_flux_pickapic"])
    assert cfg["ablations"]["reward_mixes"] == {"clip_only": {"clip": 1.0}, "pickscore_only": {"pickscore": 1.0},
                                                "combined": {"pickscore": 1.0, "clip": 1.0}}
    assert distinct_runs(cfg) == 4 + 2 + 2 + 1 + 2
    assert cfg["methods"]["dance_grpo"]["train"]["method"]["n_steps"] == 25  # Table 2: 25 / 14
    assert cfg["methods"]["dance_grpo"]["train"]["advantage"] == {"n_adv": 1}  # config.yaml's, kept
    assert merged(["workflow/presets/smoke.yaml"])["ablations"]["reward_mixes"] == \
        load_config_file(str(REPO / "config.yaml"))["ablations"]["reward_mixes"]


def test_plan_command(dry_runs):
    res = dry_runs["plan"]
    assert res.returncode == 0, res.stderr[-3000:]
    plan = json.loads(res.stdout)
    cfg = merged(PRESETS[PLAN_PRESET])
    rows = {s["rule"]: s for s in plan["stages"]}
    assert {r: s["jobs"] for r, s in rows.items()} == expected_jobs(cfg)
    train, res_train = rows["train"], cfg["resources"]["train"]
    assert (train["gpus"], train["cpus"], train["where"]) == (8, 8 * res_train["cpus_per_gpu"], "slurm")
    assert train["runtime_h"] == res_train["runtime"] / 60 == 48
    assert train["gpu_hours_bound"] == train["jobs"] * 8 * 48
    assert rows["eval_run"]["gpu_hours_bound"] == rows["eval_run"]["jobs"] * cfg["resources"]["eval"]["runtime"] / 60
    assert plan["total"]["gpu_hours_bound"] == pytest.approx(sum(s["gpu_hours_bound"] for s in plan["stages"]))
    # the estimate: the FLOP model (tafs.planning.timing) per run and seed, not the bound; the test prompts are not
    # fetched here, so the evaluation stages stay unmeasured and the total says which
    assert isinstance(train["gpu_hours_estimate"], float) and train["gpu_hours_estimate"] > 0
    assert plan["total"]["gpu_hours_estimate"].startswith(f"{train['gpu_hours_estimate']} + unmeasured (")
    memory = plan["estimates"]["stages"]
    assert {r for r, s in rows.items() if s["gpus"]} == set(memory)
    assert all(0 < m["peak_gb"] <= m["gpu_mem_gb"] == 80 for m in memory.values()) and not plan["estimates"]["warnings"]
    assert [r["method"] for r in plan["estimates"]["table2"]] == ["tafs_grpo", "flow_grpo", "dance_grpo", "mix_grpo"]
    assert {rows[r]["where"] for r in ("download", "tables", "mlflow_ingest")} == {"local"}
    assert rows["prompts"]["gpus"] == 0 and rows["prompts"]["where"] == "slurm"
    assert {d["repo"] for d in plan["downloads"]} == {repo for repo, _ in hub_models(cfg)}
    assert plan["download_gb"] == pytest.approx(sum(tafs_plan.SIZES_GB[d["repo"]] for d in plan["downloads"]), abs=0.1)
    text = tafs_plan.render(plan)
    assert re.search(r"\| train +\| +33 \| slurm +\| +8 \| +64 \|", text), text
    assert "GPU-hours bound (jobs x GPUs x runtime limit): 13560.0" in text and "black-forest-labs/FLUX.1-dev" in text
    assert "Peak GPU memory per job" in text and re.search(r"\| dance_grpo +\| +25 \| +14 \| +\d+ \| +646 \|", text), text


def test_plan_estimates_from_a_gpu_benchmark(tmp_path):
    """With a recorded CUDA row (tafs.planning.measured), the training estimate is jobs x GPUs x (seconds per sample
    x this config's samples per GPU and iteration x iterations)."""
    data = tmp_path / "gpu_measurements.json"
    data.write_text(json.dumps({"rows": [{"method": "tafs_grpo", "median_s": 3.2, "device": "cuda:0", "B": 2,
                                          "G": 8, "backbone": "sd3-medium"}]}))
    measured = tafs_plan.measured_seconds(data)
    assert measured[0] == pytest.approx(0.2) and "sd3-medium" in measured[1]
    cfg = {"train": {"prompts_per_iter": 24, "group_size": 48, "iterations": 1500}}  # global: 3 prompts a GPU
    row = tafs_plan.stage_row("train", [{"gpu": "8", "cpus_per_gpu": "8", "runtime": "2880", "mem_mb": "1000"}] * 2,
                              False, cfg, measured)
    assert row.gpu_hours_bound == 2 * 8 * 48
    assert row.gpu_hours_estimate == pytest.approx(2 * 8 * 0.2 * 3 * 48 * 1500 / 3600, abs=0.1)
    assert tafs_plan.measured_seconds(tmp_path / "nowhere.json") is None


def test_plan_merges_config_files_in_order():
    cfg = tafs_plan.load_config([str(REPO / f) for f in PRESETS["paper_sd3_geneval"]], REPO)
    assert cfg["task"] == "geneval" and "hidream_full" in cfg["baselines"] and cfg["report"] is True
    assert cfg["eval"]["images_per_prompt"] == 4 and cfg["tables"]["extra"] == []
