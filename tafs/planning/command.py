"""``python -m tafs plan``: what a config asks of a cluster, before anything runs.

    python -m tafs plan --configfile workflow/presets/paper_flux_pickapic.yaml [more.yaml ...] [--json]

The config files are merged over config.yaml as Snakemake and the Snakefile merge them (in order, mappings
deep-merged; ``tafs.config.merge_defaults``), validated and checked by ``tafs.dag.Plan`` (the DAG-time checks),
then ``snakemake -n --forceall`` lists every job with its resources. Per rule: jobs, GPUs and CPUs per job, the
runtime limit, and the GPU-hour bound (jobs x GPUs x runtime limit: what the scheduler may charge, not what the
jobs use). The GPU-hour estimate is the FLOP model of ``tafs.planning.timing`` (calibrated to the paper's Table 2),
or, for training, a measured seconds-per-iteration on a GPU when the package's measurements have one
(``tafs.planning.measured``: tafs/planning/data/gpu_measurements.json, recorded by
``bench/iteration_time.py --backbone sd3-medium --record-plan`` on a CUDA machine). Per GPU stage, the peak GPU
memory of its largest job (``tafs.planning.memory``: weights, LoRA state, activations) against
``resources.<stage>.gpu_mem_gb`` (a warning names the setting to change), and Table 2's predicted seconds per
iteration beside the paper's. Then the hub downloads, with sizes from the model cards (approximate), and the totals.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tafs.config import ConfigError, deep_merge, load_config_file, merge_defaults, schema_errors
from tafs.planning.measured import measured_mfu, measured_seconds

SCHEMA = "workflow/schemas/config.schema.yaml"
UNMEASURED = "unmeasured (record a GPU run: bench/iteration_time.py --backbone sd3-medium --record-plan)"
# Approximate download sizes in GB (the files the presets' allow_patterns select), from the model cards.
SIZES_GB = {
    "stabilityai/stable-diffusion-3.5-medium": 16, "stabilityai/stable-diffusion-3.5-large": 28,
    "stabilityai/stable-diffusion-3.5-large-turbo": 28, "black-forest-labs/FLUX.1-dev": 34,
    "black-forest-labs/FLUX.1-schnell": 34, "alimama-creative/FLUX.1-Turbo-Alpha": 0.7, "ByteDance/Hyper-SD": 1.4,
    "Efficient-Large-Model/SANA1.5_1.6B_1024px_diffusers": 10,
    "Efficient-Large-Model/Sana_Sprint_1.6B_1024px_diffusers": 10, "HiDream-ai/HiDream-I1-Full": 47,
    "HiDream-ai/HiDream-I1-Fast": 47, "meta-llama/Llama-3.1-8B-Instruct": 16,
    "openai/clip-vit-large-patch14": 1.7, "yuvalkirstain/PickScore_v1": 4,
    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K": 0.01, "xswu/HPSv2": 2, "THUDM/ImageReward": 1.8,
    "google-bert/bert-base-uncased": 0.01, "facebook/mask2former-swin-small-coco-instance": 0.3,
    "CodeGoat24/UnifiedReward-qwen-7b": 16,
}


@dataclass
class Stage:
    """One rule of the dry run: its jobs and the resources of one job."""

    rule: str
    jobs: int
    where: str  # slurm (a submitted job) | local (the host running Snakemake)
    gpus: int
    cpus: int
    mem_gb: float
    runtime_h: float
    gpu_hours_bound: float
    gpu_hours_estimate: float | str | None = None


def load_config(files: list[str], root: Path) -> dict[str, Any]:
    """config.yaml with ``files`` merged over it, validated (defaults filled in as Snakemake does)."""
    from snakemake.utils import validate

    given: dict[str, Any] = {}
    for f in files:
        given = deep_merge(given, load_config_file(f))
    config = merge_defaults(load_config_file(str(root / "config.yaml")), given)
    errors = schema_errors(config, str(root / SCHEMA))
    if errors:
        raise ConfigError("config validation failed:\n  " + "\n  ".join(errors))
    validate(config, str((root / SCHEMA).resolve()))
    return config


def dry_run(files: list[str], root: Path, remaining: bool) -> str:
    """The stdout of ``snakemake -n`` (every job, with ``--forceall``) for these config files."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "all", "--configfile", *files,
           *([] if remaining else ["--forceall"])]
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise ConfigError("snakemake -n failed:\n" + (res.stderr or res.stdout)[-3000:])
    return res.stdout


def local_rules(root: Path) -> set[str]:
    """Rules declared ``localrule: True`` in workflow/rules/*.smk: they run where Snakemake runs, never on Slurm
    (a dry run does not say which jobs are local)."""
    out = set()
    for smk in (root / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^\s*(?=rule \w+:)", smk.read_text(encoding="utf-8"), flags=re.MULTILINE):
            head = re.match(r"rule (\w+):", block)
            if head and re.search(r"^\s+localrule: True", block, re.MULTILINE):
                out.add(head.group(1))
    return out


def parse_jobs(stdout: str) -> dict[str, list[dict[str, str]]]:
    """rule -> the resources of each of its jobs in a dry run (rule ``all`` left out)."""
    jobs: dict[str, list[dict[str, str]]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \S+:)", stdout):
        head = re.match(r"(?:local)?rule (\S+):", block)
        if not head or head.group(1) == "all":
            continue
        res = re.search(r"^\s+resources: (.*)$", block, re.MULTILINE)
        jobs.setdefault(head.group(1), []).append(dict(kv.split("=", 1) for kv in res.group(1).split(", ")) if res
                                                  else {})
    return jobs


def stage_row(rule: str, jobs: list[dict[str, str]], local: bool, config: dict,
              measured: tuple[float, str] | None) -> Stage:
    r = jobs[0]  # every job of a rule gets its stage's resources (tafs.dag.Plan.stage_resources)
    gpus, runtime_h = int(r.get("gpu", 0)), int(r.get("runtime", 0)) / 60
    cpus = gpus * int(r.get("cpus_per_gpu", 1)) if gpus else int(r.get("cpus_per_task", 1))
    stage = Stage(rule, len(jobs), "local" if local else "slurm", gpus, cpus,
                  round(int(r.get("mem_mb", 0)) / 1000, 1), runtime_h, round(len(jobs) * gpus * runtime_h, 1))
    if rule == "train" and gpus:
        stage.gpu_hours_estimate = UNMEASURED if measured is None else round(
            len(jobs) * gpus * train_seconds(config, measured[0], gpus) / 3600, 1)
    elif gpus:
        stage.gpu_hours_estimate = "unmeasured"
    return stage


def train_seconds(config: dict, seconds_per_sample: float, gpus: int) -> float:
    """One training job's seconds: each GPU's share of the global prompts_per_iter x group_size samples an
    iteration (tafs/train/shard.py), at the measured seconds per sample of one GPU."""
    t = config["train"]
    return seconds_per_sample * t["prompts_per_iter"] * t["group_size"] / max(1, gpus) * t["iterations"]


def model_estimates(config: dict, stages: list[Stage], root: Path, measured: tuple[float, str] | None) -> dict:
    """Memory and GPU-hours per GPU stage from the real models' configs (tafs.planning), filled into ``stages``:
    a measured training estimate (tafs.planning.measured) is kept; the model fills in the rest."""
    from tafs.planning.estimate import estimate

    try:
        model = estimate(config, [asdict(s) for s in stages], root, measured_mfu())
    except Exception as e:  # noqa: BLE001 - the plan still lists jobs and bounds when a model cannot be estimated
        return {"stages": {}, "warnings": [], "table2": [], "error": f"{type(e).__name__}: {e}"}
    for s in stages:
        row = model["stages"].get(s.rule)
        if row is None or (measured is not None and s.rule == "train"):
            continue
        s.gpu_hours_estimate = row["gpu_hours"] if row["gpu_hours"] is not None else row["basis"]
    train = model["stages"].get("train")
    model["basis"] = train["basis"] if train and train["gpu_hours"] is not None else UNMEASURED
    return model


def downloads(config: dict, root: Path) -> list[dict[str, Any]]:
    from tafs.dag import Plan

    with contextlib.chdir(root):  # the config's relative paths are the workflow's
        models = Plan(config).downloads()
    return [{"repo": m.repo, "revision": m.revision, "folder": name, "size_gb": SIZES_GB.get(m.repo)}
            for name, m in sorted(models.items())]


def build(files: list[str], root: Path, remaining: bool = False) -> dict[str, Any]:
    """The whole plan as JSON-ready data."""
    shown, files = files, [str(Path(f).resolve()) for f in files]
    config = load_config(files, root)
    dls = downloads(config, root)  # builds tafs.dag.Plan: the DAG-time checks, before the slow dry run
    measured = measured_seconds()
    local = local_rules(root)
    stages = [stage_row(rule, jobs, rule in local, config, measured)
              for rule, jobs in parse_jobs(dry_run(files, root, remaining)).items()]
    stages.sort(key=lambda s: (s.where == "local", -s.gpus, -s.gpu_hours_bound, s.rule))  # GPU stages first
    model = model_estimates(config, stages, root, measured)
    estimates = [s.gpu_hours_estimate for s in stages if s.gpus]
    known = [e for e in estimates if isinstance(e, (int, float))]
    unknown = [s.rule for s in stages if s.gpus and not isinstance(s.gpu_hours_estimate, (int, float))]
    return {
        "command": "snakemake --cores all --profile slurm --configfile " + " ".join(shown),
        "stages": [asdict(s) for s in stages],
        "total": {"jobs": sum(s.jobs for s in stages), "gpu_jobs": sum(s.jobs for s in stages if s.gpus),
                  "gpu_hours_bound": round(sum(s.gpu_hours_bound for s in stages), 1),
                  "gpu_hours_estimate": ("unmeasured" if not known else round(sum(known), 1) if not unknown
                                         else f"{round(sum(known), 1)} + unmeasured ({', '.join(unknown)})")},
        "estimate_source": measured[1] if measured else model.get("basis", UNMEASURED),
        "estimates": model,
        "downloads": dls,
        "download_gb": round(sum(d["size_gb"] or 0 for d in dls), 1),
        "download_unknown": [d["repo"] for d in dls if d["size_gb"] is None],
    }


def render(plan: dict[str, Any]) -> str:
    """The plan as readable tables."""
    import pandas as pd

    rows = [{**s, "gpu_hours_estimate": "-" if s["gpu_hours_estimate"] is None else
             "unmeasured" if isinstance(s["gpu_hours_estimate"], str) else s["gpu_hours_estimate"]}
            for s in plan["stages"]]
    stages = pd.DataFrame(rows).rename(columns={
        "mem_gb": "mem GB", "runtime_h": "runtime limit h", "gpu_hours_bound": "GPU-h bound",
        "gpu_hours_estimate": "GPU-h estimate"})
    dl = pd.DataFrame(plan["downloads"], columns=["repo", "revision", "size_gb"]).rename(
        columns={"size_gb": "~GB"}).fillna("?")
    t = plan["total"]
    return "\n".join([
        f"Jobs of: {plan['command']}", "", stages.to_markdown(index=False), "",
        (f"Total: {t['jobs']} jobs, {t['gpu_jobs']} on GPUs; GPU-hours bound (jobs x GPUs x runtime limit): "
         f"{t['gpu_hours_bound']}; estimate: {t['gpu_hours_estimate']}"),
        (f"GPU-hour estimates: {plan['estimate_source']}. The bound is what the runtime limits allow, not a "
         "measurement."), "", *render_estimates(plan.get("estimates") or {}),
        (f"Downloads into hub.cache (sizes approximate, from the model cards): {len(plan['downloads'])} "
         f"repositories, ~{plan['download_gb']} GB"
         + (f" + unknown: {', '.join(plan['download_unknown'])}" if plan["download_unknown"] else "")),
        "", dl.to_markdown(index=False)])


def render_estimates(est: dict[str, Any]) -> list[str]:
    """Per GPU stage the peak memory of its largest job by part, warnings, and Table 2's predictions."""
    import pandas as pd

    if est.get("error"):
        return [f"Memory and time estimates unavailable: {est['error']}", ""]
    lines = []
    if est.get("stages"):
        rows = [{"rule": rule, "largest job": r["job"] or "-", "peak GB (est.)": r["peak_gb"] if r["peak_gb"] else "?",
                 "GPU GB": r["gpu_mem_gb"], "by part (GB)": "; ".join(f"{w} {gb:.1f}" for w, gb in r["parts"]) or
                 "model not catalogued (tafs/planning/catalogue.py)"} for rule, r in est["stages"].items()]
        lines += [("Peak GPU memory per job (tafs.planning.memory: weights at their precision + LoRA and AdamW state + "
                  "the largest phase: training activations, sampling or decoding):"), "",
                  pd.DataFrame(rows).to_markdown(index=False), ""]
        lines += [f"  {rule} phases: {', '.join(r['phases'])}" for rule, r in est["stages"].items() if r["phases"]]
        lines += [f"  {rule} per job: " + ", ".join(f"{run} {j['s_per_iteration']} s/iter, {j['wall_h']} h"
                                                      for run, j in r["per_job"].items())
                  for rule, r in est["stages"].items() if r.get("per_job")]
        lines.append("")
    lines += [f"WARNING: {w}" for w in est.get("warnings", [])]
    lines += [f"NOTE: {w}" for w in est.get("runtime_notes", [])]
    if est.get("table2"):
        t2 = pd.DataFrame(est["table2"]).rename(columns={
            "nfe_old": "NFE old", "nfe_theta": "NFE theta", "predicted_s": "predicted s / iter", "paper_s": "paper s / iter"})
        lines += ["", (f"Table 2: seconds per iteration on 8 x H100 of this config's model, step counts and batch (FLOP model, "
                  f"MFU {est.get('mfu')} {est.get('mfu_source', '')}), beside the paper's:"), "",
                  t2.to_markdown(index=False), ""]
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="tafs plan", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--configfile", nargs="+", action="extend", required=True,
                   help="config files merged over config.yaml in order (repeat the flag or list several)")
    p.add_argument("--directory", default=".", help="the repository root (Snakefile, config.yaml); default: .")
    p.add_argument("--remaining", action="store_true", help="only the jobs not done yet (default: every job)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    a = p.parse_args(argv)
    try:
        plan = build(a.configfile, Path(a.directory), a.remaining)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from e
    print(json.dumps(plan, indent=2) if a.json else render(plan))


if __name__ == "__main__":
    main()
