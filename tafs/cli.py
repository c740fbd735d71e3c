"""``python -m tafs <stage>``: one entry point per DAG stage. Snakemake rules only call these."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable

log = logging.getLogger("tafs")


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, n))


def _task(a: argparse.Namespace):
    from tafs.config import parse_json_arg
    from tafs.tasks import registry

    return registry.get(a.task, {"tasks": parse_json_arg(a.tasks, "--tasks")})


def _model_options(a: argparse.Namespace, runtime: dict | None = None):
    from tafs.config import deep_merge, from_dict, parse_json_arg
    from tafs.models.options import ModelOptions

    return from_dict(ModelOptions, deep_merge(parse_json_arg(a.model_cfg, "model"), runtime or {}), "model")


def cmd_prompts(a: argparse.Namespace) -> None:
    from tafs.config import parse_json_arg
    from tafs.prompts import check_metadata, read_prompt_file, write_prompt_file
    from tafs.rewards import registry

    task = _task(a)
    prompts = task.load_prompts(a.split, a.source or None)
    if a.exclude:
        held_out = {p.text for p in read_prompt_file(a.exclude)}
        kept = [p for p in prompts if p.text not in held_out]
        log.info("dropped %d %s prompts that are test prompts", len(prompts) - len(kept), a.split)
        prompts = kept
    names = [*task.rewards, *parse_json_arg(a.train_rewards, "--train-rewards")] if a.split == "train" else \
        [m.reward for m in task.metrics]  # --train-rewards: {reward: [runs that train on it]}
    check_metadata(prompts, {n: registry.spec(n).needs for n in names}, f"task {task.name!r} ({a.split})")
    n = write_prompt_file(a.out, prompts)
    log.info("wrote %d %s prompts of task %s to %s", n, a.split, task.name, a.out)


def cmd_evaluate(a: argparse.Namespace) -> None:
    from tafs.config import from_dict, parse_json_arg
    from tafs.eval_jobs import finish, log_points, shard_job
    from tafs.evaluate import EvalConfig, sweep
    from tafs.models.loading import load_backbone
    from tafs.prompts import read_prompt_file

    _threads(a.threads)
    cfgs = [from_dict(EvalConfig, {**parse_json_arg(a.cfg, "eval"), "sampler": s}, "eval") for s in a.sampler]
    if min(a.nfe) < 1:
        raise SystemExit(f"--nfe must be >= 1, got {a.nfe}")
    job, prompts = shard_job(a, a.sampler), read_prompt_file(a.prompts)
    backbone = load_backbone(a.model, adapter=a.adapter, options=_model_options(a))
    info, points = _model_info(a.model), []
    for cfg in cfgs:  # the model and the rewards load once for every sampler
        points += sweep(backbone, prompts, cfg, a.nfe, a.name or Path(a.model).name, Path(a.out) / cfg.sampler,
                        info=info, job=job)
    log_points(points)
    finish(a, job, points, info)


def cmd_evaluate_pipeline(a: argparse.Namespace) -> None:
    from tafs.config import from_dict, parse_json_arg
    from tafs.eval_jobs import finish, log_points, shard_job
    from tafs.evaluate import EvalConfig
    from tafs.evaluate_pipeline import SAMPLER, BaselineConfig, load_pipeline, sweep_pipeline
    from tafs.prompts import read_prompt_file

    _threads(a.threads)
    cfg = from_dict(EvalConfig, {**parse_json_arg(a.cfg, "eval"), "sampler": SAMPLER}, "eval")
    base = from_dict(BaselineConfig, parse_json_arg(a.baseline, f"baselines.{a.name}"), f"baselines.{a.name}")
    job, prompts = shard_job(a, [SAMPLER]), read_prompt_file(a.prompts)
    pipe, info = load_pipeline(a.model, base, a.lora), _model_info(a.model)
    points = sweep_pipeline(pipe, prompts, cfg, base, a.nfe, a.name, Path(a.out), info=info, job=job)
    log_points(points)
    finish(a, job, points, info)


def _model_info(model: str) -> dict[str, str]:
    """``model_commit``: the hub commit a downloaded model was fetched at (logged to MLflow as a param)."""
    from tafs.hub_fetch import model_commit

    commit = model_commit(model)
    return {"model_commit": commit} if commit else {}


def cmd_train(a: argparse.Namespace) -> None:
    from dataclasses import asdict

    from tafs.config import from_dict, parse_json_arg
    from tafs.distributed import check_expected_gpus
    from tafs.models.loading import load_backbone
    from tafs.prompts import read_prompt_file
    from tafs.train.identity import job_identity, merge_runtime
    from tafs.train.preempt import PREEMPTED_EXIT, Preempted
    from tafs.train.trainer import Trainer, TrainConfig

    check_expected_gpus(a.expect_gpus)  # before any model is loaded: a wrong allocation fails at once
    _threads(a.threads)
    given, runtime = parse_json_arg(a.cfg, "train"), parse_json_arg(a.runtime, "--runtime")
    cfg = from_dict(TrainConfig, merge_runtime(given, runtime.get("train") or {}), "train")
    prompts, options = read_prompt_file(a.prompts), _model_options(a, runtime.get("model"))
    trainer = Trainer(load_backbone(a.model, options=options), cfg, Path(a.ckpt_dir), prompts)
    trainer.identity = job_identity(given, asdict(options), a.model, a.prompts)
    live = None
    if trainer.accel.is_main_process:  # only the main process of a multi-GPU run talks to the server
        from tafs.config import redact
        from tafs.tracking.live import Target, training_run

        live = training_run(Target.parse(a.tracking), a.out, redact(asdict(cfg)))
    try:
        summary = trainer.run(resume=not a.no_resume, stop_after=a.stop_after, on_iteration=live.log if live else None)
    except Preempted as e:  # the scheduler runs the job again (Snakemake retries): it resumes from the checkpoint
        log.warning("%s; exit code %d", e, PREEMPTED_EXIT)
        raise SystemExit(PREEMPTED_EXIT) from None
    trainer.export(Path(a.out), {**summary, "base_model": a.model, **_model_info(a.model), "prompts": a.prompts})
    if live is not None:
        live.close()
    log.info("trained %d iterations in %.0f s -> %s", summary["iterations"], summary["wall_s"], a.out)


def cmd_free_port(a: argparse.Namespace) -> None:
    from tafs.distributed import free_port

    print(free_port())


def cmd_summary(a: argparse.Namespace) -> None:
    from tafs.paths import Layout
    from tafs.report.summary import eval_frame, percent_metrics, to_markdown

    layout = Layout(a.results)
    print(to_markdown(eval_frame(layout), percent_metrics(layout)))


def cmd_config_snapshot(a: argparse.Namespace) -> None:
    from tafs.config import redact
    from tafs.io import write_json

    write_json(a.out, redact(json.loads(a.cfg)))
    if a.owner_out:  # the folder now belongs to this config (tafs.owner)
        from tafs import owner

        owner.write(a.owner_out, json.loads(a.owner))


def cmd_grid(a: argparse.Namespace) -> None:
    from tafs.grid import build_grid, grid_manifest
    from tafs.io import read_json, write_json

    config = read_json(a.config)
    grid = build_grid(config)
    cats = None
    if a.prompts:
        from tafs.prompts import categories_of, read_prompt_file

        cats = categories_of(read_prompt_file(a.prompts))
    manifest = grid_manifest(config, grid, cats)
    write_json(a.out, manifest)
    log.info("%d runs, %d training jobs -> %s", len(grid.runs), sum(map(len, manifest["run_seeds"].values())), a.out)


def _load_config(path: str | None) -> dict:
    if not path:
        return {}
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    return data if isinstance(data, dict) else {}


def cmd_tasks(a: argparse.Namespace) -> None:
    from tafs.tasks import registry

    config = _load_config(a.configfile)
    for task in registry.all_tasks(config):
        metrics = ", ".join(f"{m.key}[{m.domain}]" for m in task.metrics)
        print(f"{task.name:<18} {task.description} | trains on {dict(task.rewards)} | metrics: {metrics}")


def cmd_rewards(a: argparse.Namespace) -> None:
    from tafs.rewards import registry

    for name in registry.available():
        spec = registry.spec(name)
        extra = [f"scale: {spec.scale}"] if spec.scale else []
        extra += [f"source: {spec.source}"] if spec.source else []
        extra += [f"needs metadata {list(spec.needs)}"] if spec.needs else []
        print(f"{name:<14} {spec.description}" + "".join(f" | {e}" for e in extra))


# Stages whose module has its own argument parser: `python -m tafs <name> ...` == `python -m <module> ...`.
DELEGATED = {
    "tables": ("tafs.report.paper_tables", "the paper's Tables 1-7 and Figure 4 from results/manifest.json"),
    "mlflow-ingest": ("tafs.tracking.ingest", "ingest a results folder into MLflow (idempotent)"),
    "compare-results": ("tafs.report.compare", "compare two results folders number by number"),
    "download": ("tafs.hub", "fetch a hub model into a folder (what the download rule runs; pre-fetching)"),
    "tiny-pipeline": ("tafs.models.tiny", "write a tiny random SD3 / Flux pipeline in the hub layout"),
    "tiny-reward": ("tafs.rewards.tiny", "write a tiny random reward model (PickScore, HPSv2.1, ...), hub layout"),
    "fetch-data": ("tafs.datafiles", "fetch a data file pinned by URL and sha256 (what the fetch_data rule runs)"),
    "launch": ("tafs.launch", ("one node's share of a multi-node training: torchrun from Slurm's environment "
                               "(the train rule runs it under srun when resources.train.nodes > 1)")),
    "evaluate-gather": ("tafs.eval_jobs", "an evaluation's metrics.json and samples.png from its scatter jobs' "
                        "shards (config eval.shard_jobs > 1; loads no model)"),
    "plan": ("tafs.planning.command", "a config's jobs, GPUs, GPU-hour bounds and downloads (a dry run, before a cluster run)"),
}


def _delegated() -> dict[str, tuple[Callable[[list[str]], object], str]]:
    """Every stage with its own parser: the generic ones and those a task's world adds (tafs.tasks.registry)."""
    import importlib

    from tafs.tasks.registry import commands

    out = {name: ((lambda argv, m=module: importlib.import_module(m).main(argv)), text)
           for name, (module, text) in DELEGATED.items()}
    out.update(commands())
    return out


def _task_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--task", required=True, help="a task name (python -m tafs tasks)")
    s.add_argument("--tasks", default="{}", help="JSON of the config's `tasks:` section (user tasks)")


def _tracking_arg(s: argparse.ArgumentParser) -> None:
    s.add_argument("--tracking", default=os.environ.get("TAFS_TRACKING"),
                   help="JSON {uri, experiment, results}: log to an MLflow server live (default: $TAFS_TRACKING, "
                        "which the DAG sets when config `tracking.uri` names a server)")


def build_parser(delegated: dict) -> argparse.ArgumentParser:
    from tafs.eval_jobs import scatter_args

    p = argparse.ArgumentParser(prog="tafs", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("prompts", help="write a task's prompt split as JSONL")
    _task_args(s)
    s.add_argument("--split", choices=["train", "test"], required=True)
    s.add_argument("--source", default="", help="the split's prompt file (a user file, or a fetched remote one); "
                   "default: the task's own file or generator")
    s.add_argument("--exclude", default="", help="a prompt file whose prompts are dropped from this split")
    s.add_argument("--train-rewards", default="{}", help="JSON {reward: [runs]} of every reward a run trains on "
                   "(their metadata is checked on the train split)")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_prompts)

    s = sub.add_parser("evaluate", help="sample a prompt file at one or more NFEs and score it with the task's metrics")
    s.add_argument("--model", required=True)
    s.add_argument("--model-cfg", default="{}", help="JSON of the model options (config `model:` but `pretrained`)")
    s.add_argument("--adapter", default=None, help="a peft LoRA adapter folder to apply")
    s.add_argument("--prompts", required=True, help="prompt file (JSONL or .txt)")
    s.add_argument("--name", default=None)
    s.add_argument("--sampler", choices=["ode", "annealed"], nargs="+", default=["ode"],
                   help="one or more samplers, each at every NFE")
    s.add_argument("--nfe", type=int, nargs="+", required=True, help="one or more NFEs (sampling steps)")
    s.add_argument("--cfg", default="{}", help="JSON of the `eval` config (with the task's metrics and reward kwargs)")
    s.add_argument("--out", required=True,
                   help="the model's evaluation folder; each sampler and NFE writes {sampler}/nfe{N}/metrics.json, samples.png")
    s.add_argument("--threads", type=int, default=1)
    _tracking_arg(s)
    scatter_args(s)
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser("evaluate-pipeline", help="an evaluation-only model (Table 1 baseline) through its own "
                                                 "diffusers pipeline, scored with the task's metrics")
    s.add_argument("--model", required=True, help="any diffusers pipeline folder")
    s.add_argument("--lora", default=None, help="a LoRA folder (diffusers format) fused into it")
    s.add_argument("--prompts", required=True, help="prompt file (JSONL or .txt)")
    s.add_argument("--name", required=True)
    s.add_argument("--nfe", type=int, nargs="+", required=True, help="inference steps of the pipeline call")
    s.add_argument("--cfg", default="{}", help="JSON of the `eval` config (with the task's metrics)")
    s.add_argument("--baseline", default="{}", help="JSON of the baseline's settings (guidance, resolution, ...)")
    s.add_argument("--out", required=True, help="folder; each NFE writes nfe{N}/metrics.json and samples.png")
    s.add_argument("--threads", type=int, default=1)
    _tracking_arg(s)
    scatter_args(s)
    s.set_defaults(fn=cmd_evaluate_pipeline)

    s = sub.add_parser("train", help="GRPO training (TAFS-GRPO or a baseline) of a LoRA adapter")
    s.add_argument("--model", required=True, help="base model folder")
    s.add_argument("--model-cfg", default="{}", help="JSON of the model options (config `model:` but `pretrained`)")
    s.add_argument("--prompts", required=True, help="training prompt file (JSONL or .txt)")
    s.add_argument("--cfg", default="{}", help="JSON of the training config (a `train` section merged with a method)")
    s.add_argument("--out", required=True, help="run folder: adapter/, metrics.jsonl, train_summary.json")
    s.add_argument("--runtime", default="{}", help="JSON {train: {...}, model: {...}}: memory/speed settings and "
                   "model folders merged over --cfg/--model-cfg, not in the checkpoint identity (tafs.train.identity)")
    s.add_argument("--ckpt-dir", required=True, help="resumable checkpoints (keep outside Snakemake outputs)")
    s.add_argument("--no-resume", action="store_true")
    s.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop after N iterations of this launch (a later launch resumes from the checkpoint)")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--expect-gpus", type=int, default=0, metavar="N",
                   help="fail at start unless the job has exactly N GPUs (one per process under accelerate); "
                        "0 (default) = CPU, nothing checked")
    _tracking_arg(s)
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("free-port", help="print a free TCP port (accelerate's --main_process_port)")
    s.set_defaults(fn=cmd_free_port)

    s = sub.add_parser("summary", help="print every evaluation under a results folder as a Markdown table")
    s.add_argument("--results", default="results")
    s.set_defaults(fn=cmd_summary)

    s = sub.add_parser("config-snapshot", help="write results/config.json: the effective config, secrets redacted")
    s.add_argument("--cfg", required=True, help="the effective config as JSON")
    s.add_argument("--out", required=True)
    s.add_argument("--owner", default="{}", help="the results folder's owner record as JSON (tafs.owner.record)")
    s.add_argument("--owner-out", default=None, help="where to write it (<results>/.tafs-owner.json)")
    s.set_defaults(fn=cmd_config_snapshot)

    s = sub.add_parser("grid", help="write results/manifest.json: every run of the DAG and each table's rows")
    s.add_argument("--config", required=True, help="the effective config as JSON (results/config.json)")
    s.add_argument("--prompts", default=None, help="the evaluation prompt file (categories, when the task names none)")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_grid)

    s = sub.add_parser("tasks", help="list the available tasks, one line each")
    s.add_argument("--configfile", default=None, help="a config whose `tasks:` adds user tasks (e.g. config.yaml)")
    s.set_defaults(fn=cmd_tasks)

    s = sub.add_parser("rewards", help="list the available rewards, one line each")
    s.set_defaults(fn=cmd_rewards)

    for name, (_, text) in delegated.items():
        sub.add_parser(name, help=f"{text} (see python -m tafs {name} --help)", add_help=False)
    return p


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = bool(argv) and argv[0] in ("-v", "--verbose")
    rest = argv[1:] if verbose else argv
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    delegated = _delegated()
    if rest and rest[0] in delegated:
        fn = delegated[rest[0]][0]
        return _one_line_errors(lambda: fn(rest[1:]), verbose)
    args = build_parser(delegated).parse_args(argv)
    _one_line_errors(lambda: args.fn(args), args.verbose)


def _one_line_errors(fn: Callable[[], object], verbose: bool) -> None:
    """Every failure ends in one last line, ``error: ...``, which the console shows. A ConfigError (bad input
    that the checks name) is that line alone; a ValueError, KeyError or FileNotFoundError may be bad input or a
    bug, so its traceback goes to the job's log first; -v re-raises everything as it is."""
    import traceback

    from tafs.config import ConfigError

    try:
        fn()
    except ConfigError as e:
        if verbose:
            raise
        raise SystemExit(f"error: {e}") from None
    except (ValueError, KeyError, FileNotFoundError) as e:
        if verbose:
            raise
        traceback.print_exc(file=sys.stderr)
        raise SystemExit(f"error: {e}") from None
