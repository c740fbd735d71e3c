"""``python -m tafs <stage>``: one entry point per DAG stage. Snakemake rules only call these."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("tafs")


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, n))


def cmd_prompts(a: argparse.Namespace) -> None:
    from tafs.io import atomic_path
    from tafs.toyworld.prompts import prompt_set, spec_to_dict

    specs = prompt_set(a.split)
    with atomic_path(a.out) as tmp:
        tmp.write_text("".join(json.dumps(spec_to_dict(s)) + "\n" for s in specs))
    log.info("wrote %d %s prompts to %s", len(specs), a.split, a.out)


def cmd_pretrain(a: argparse.Namespace) -> None:
    from tafs.config import from_dict, parse_json_arg
    from tafs.pretrain import PretrainConfig, Pretrainer

    _threads(a.threads)
    cfg = from_dict(PretrainConfig, parse_json_arg(a.cfg, "pretrain"), "pretrain")
    trainer = Pretrainer(cfg, Path(a.out), Path(a.ckpt_dir))
    metrics = trainer.run(resume=not a.no_resume)
    trainer.export(metrics)
    log.info("pretrained %d steps in %.0f s -> %s", metrics["steps"], metrics["wall_s"], a.out)


def cmd_evaluate(a: argparse.Namespace) -> None:
    from tafs.config import from_dict, parse_json_arg
    from tafs.evaluate import EvalConfig, sweep
    from tafs.models.loading import load_backbone

    _threads(a.threads)
    cfg = from_dict(EvalConfig, {**parse_json_arg(a.cfg, "eval"), "sampler": a.sampler}, "eval")
    if min(a.nfe) < 1:
        raise SystemExit(f"--nfe must be >= 1, got {a.nfe}")
    backbone = load_backbone(a.model, adapter=a.adapter)
    for m in sweep(backbone, cfg, a.nfe, a.name or Path(a.model).name, Path(a.out)):
        log.info("%s %s@%d: %s", m["model"], m["sampler"], m["nfe"],
                 " ".join(f"{k} {v['mean']:.3f}" for k, v in m["metrics"].items()))


def cmd_train(a: argparse.Namespace) -> None:
    from tafs.config import from_dict, parse_json_arg
    from tafs.models.loading import load_backbone
    from tafs.distributed import check_expected_gpus
    from tafs.train.trainer import Trainer, TrainConfig

    check_expected_gpus(a.expect_gpus)  # before any model is loaded: a wrong allocation fails at once
    _threads(a.threads)
    cfg = from_dict(TrainConfig, parse_json_arg(a.cfg, "train"), "train")
    trainer = Trainer(load_backbone(a.model), cfg, Path(a.ckpt_dir))
    summary = trainer.run(resume=not a.no_resume)
    trainer.export(Path(a.out), {**summary, "base_model": a.model})
    log.info("trained %d iterations in %.0f s -> %s", summary["iterations"], summary["wall_s"], a.out)


def cmd_free_port(a: argparse.Namespace) -> None:
    from tafs.distributed import free_port

    print(free_port())


def cmd_summary(a: argparse.Namespace) -> None:
    from tafs.report.tables import eval_frame, to_markdown

    paths = sorted(Path(a.results).glob("eval/**/metrics.json"))
    if not paths:
        raise SystemExit(f"no metrics.json under {a.results}/eval: run the pipeline first")
    print(to_markdown(eval_frame(paths)))


def cmd_grid(a: argparse.Namespace) -> None:
    from tafs.grid import build_grid, grid_manifest
    from tafs.io import read_json, write_json

    config = read_json(a.config)
    grid = build_grid(config)
    write_json(a.out, grid_manifest(config, grid))
    log.info("%d runs x %d seeds -> %s", len(grid.runs), len(config["seeds"]), a.out)


# Stages whose module has its own argument parser: `python -m tafs <name> ...` == `python -m <module> ...`.
DELEGATED = {
    "train-scorer": ("tafs.toyworld.scorer", "train the toy CLIP-like scorer (a learned reward)"),
    "tables": ("tafs.report.paper_tables", "the paper's Tables 1-7 and Figure 4 from results/grid.json"),
    "mlflow-ingest": ("tafs.tracking", "ingest a results folder into MLflow (idempotent)"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tafs", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("prompts", help="write a prompt split as JSONL")
    s.add_argument("--split", choices=["train", "test", "all"], required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_prompts)

    s = sub.add_parser("pretrain", help="rectified-flow pretraining of the toy base model")
    s.add_argument("--cfg", default="{}", help="JSON of the `pretrain` config section")
    s.add_argument("--out", required=True, help="model folder (hub layout) to write")
    s.add_argument("--ckpt-dir", required=True, help="resumable checkpoints (keep outside Snakemake outputs)")
    s.add_argument("--no-resume", action="store_true")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(fn=cmd_pretrain)

    s = sub.add_parser("evaluate", help="sample the test prompts at one or more NFEs and score them")
    s.add_argument("--model", required=True)
    s.add_argument("--adapter", default=None, help="a peft LoRA adapter folder to apply")
    s.add_argument("--name", default=None)
    s.add_argument("--sampler", choices=["ode", "annealed"], default="ode")
    s.add_argument("--nfe", type=int, nargs="+", required=True, help="one or more NFEs (sampling steps)")
    s.add_argument("--cfg", default="{}", help="JSON of the `eval` config section")
    s.add_argument("--out", required=True, help="folder; each NFE writes nfe{N}/metrics.json and grid.png")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser("train", help="GRPO training (TAFS-GRPO or a baseline) of a LoRA adapter")
    s.add_argument("--model", required=True, help="base model folder")
    s.add_argument("--cfg", default="{}", help="JSON of the training config (a `train` section merged with a method)")
    s.add_argument("--out", required=True, help="run folder: adapter/, metrics.jsonl, train_summary.json")
    s.add_argument("--ckpt-dir", required=True, help="resumable checkpoints (keep outside Snakemake outputs)")
    s.add_argument("--no-resume", action="store_true")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--expect-gpus", type=int, default=0, metavar="N",
                   help="fail at start unless the job has exactly N GPUs (one per process under accelerate); "
                        "0 (default) = CPU, nothing checked")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("free-port", help="print a free TCP port (accelerate's --main_process_port)")
    s.set_defaults(fn=cmd_free_port)

    s = sub.add_parser("summary", help="print every evaluation under a results folder as a Markdown table")
    s.add_argument("--results", default="results")
    s.set_defaults(fn=cmd_summary)

    s = sub.add_parser("grid", help="write results/grid.json: every run of the DAG and each table's rows")
    s.add_argument("--config", required=True, help="the effective config as JSON (results/config.json)")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_grid)

    for name, (module, text) in DELEGATED.items():
        sub.add_parser(name, help=f"{text} (see python -m {module} --help)", add_help=False)

    return p


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = bool(argv) and argv[0] in ("-v", "--verbose")
    rest = argv[1:] if verbose else argv
    if rest and rest[0] in DELEGATED:
        import importlib

        module = importlib.import_module(DELEGATED[rest[0]][0])
        return _one_line_errors(lambda: module.main(rest[1:]), verbose)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    _one_line_errors(lambda: args.fn(args), args.verbose)


def _one_line_errors(fn, verbose: bool) -> None:
    """Bad input (config, missing file, wrong value) ends in a one-line message; -v shows the traceback."""
    from tafs.config import ConfigError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    try:
        fn()
    except (ConfigError, ValueError, KeyError, FileNotFoundError) as e:
        if verbose:
            raise
        raise SystemExit(f"error: {e}") from None
