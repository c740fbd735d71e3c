"""Evaluation as scatter / gather Snakemake jobs (config ``eval.shard_jobs`` K > 1).

Each of a model's K scatter jobs (``python -m tafs evaluate ... --shard-job J/K --done FILE``, also
``evaluate-pipeline``) samples and scores its share of the prompt shards of every (sampler, NFE) point
(``tafs.eval_shards.ShardJob``: round robin), writes them to ``<point>/shards/`` and then its ``--done`` file
(``Layout.eval_shard_job``): the shards it owns and the model's ``info`` (hub commit), which the shard keys hash.
The gather job (``python -m tafs evaluate-gather``) reads those files and every shard back and writes each point's
``metrics.json`` and ``samples.png``, the files one unsplit job writes, without loading the model or a reward.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from tafs.config import ConfigError
from tafs.io import read_json, write_json

if TYPE_CHECKING:  # imports torch: loaded when a command runs, not when the CLI parses
    from tafs.eval_shards import ShardJob

log = logging.getLogger(__name__)


def scatter_args(s: argparse.ArgumentParser) -> None:
    """``--shard-job J/K`` and ``--done FILE`` of the evaluate commands."""
    s.add_argument("--shard-job", default=None, metavar="J/K",
                   help="scatter job J of K (config eval.shard_jobs): only its shards, no metrics.json (evaluate-gather)")
    s.add_argument("--done", default=None, help="with --shard-job: the file written when its shards are done")


def shard_job(a: argparse.Namespace, samplers: Sequence[str]) -> ShardJob | None:
    """The scatter job of the command line (None without ``--shard-job``: the whole evaluation)."""
    if a.shard_job is None:
        return None
    if not a.done:
        raise ConfigError("--shard-job needs --done (the file that marks the scatter job finished)")
    from tafs.eval_shards import ShardJob

    return ShardJob.parse(a.shard_job, samplers, a.nfe)


def write_done(path: str | Path, job: ShardJob, points: list[dict], info: dict[str, str]) -> None:
    """A scatter job's done file: which shards it owns per point, and the model's info for the gather."""
    write_json(path, {"job": job.index, "jobs": job.count, "info": info,
                      "shards": {f"{p['sampler']}/nfe{p['nfe']}": p["shards"] for p in points}})


def read_info(done: Sequence[str | Path]) -> dict[str, str]:
    """The model's info from the scatter jobs' done files (one per job, in order; they must agree)."""
    records = [read_json(p) for p in done]
    jobs = sorted(int(r["job"]) for r in records)
    if jobs != list(range(len(records))) or any(int(r["jobs"]) != len(records) for r in records):
        raise ConfigError(f"--done: expected the done files of scatter jobs 0..{len(records) - 1} of "
                          f"{len(records)}, got jobs {jobs} of {sorted({int(r['jobs']) for r in records})}")
    infos = [dict(r.get("info") or {}) for r in records]
    if any(i != infos[0] for i in infos):
        raise ConfigError(f"--done: the scatter jobs saw different models ({infos}); re-run them")
    return infos[0]


def gather(prompts_file: str, cfg: dict, samplers: Sequence[str], nfes: Sequence[int], name: str, out: Path,
           info: dict[str, str]) -> list[dict]:
    """Every point's metrics.json and samples.png under ``out/<sampler>/nfe<N>`` from the shards on disk."""
    from dataclasses import replace

    from tafs.config import from_dict
    from tafs.evaluate import EvalConfig, select_prompts, write_point
    from tafs.prompts import read_prompt_file

    prompts = read_prompt_file(prompts_file)
    out_points = []
    for sampler in samplers:
        base = from_dict(EvalConfig, {**cfg, "sampler": sampler}, "eval")
        chosen = select_prompts(prompts, base.per_category, base.images_per_prompt)
        out_points += [write_point(chosen, replace(base, nfe=n), name, out / sampler / f"nfe{n}", info) for n in nfes]
    return out_points


def main(argv: list[str] | None = None) -> None:
    from tafs.config import parse_json_arg

    p = argparse.ArgumentParser(prog="tafs evaluate-gather", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", required=True, help="the prompt file the scatter jobs evaluated")
    p.add_argument("--name", required=True, help="the model's name, as the scatter jobs got it")
    p.add_argument("--sampler", nargs="+", required=True, help="the samplers of the evaluation (pipeline: a baseline)")
    p.add_argument("--nfe", type=int, nargs="+", required=True)
    p.add_argument("--cfg", default="{}", help="JSON of the `eval` config, as the scatter jobs got it")
    p.add_argument("--out", required=True, help="the model's evaluation folder (<out>/<sampler>/nfe<N>/)")
    p.add_argument("--done", nargs="+", required=True, help="the done files of every scatter job")
    p.add_argument("--tracking", default=os.environ.get("TAFS_TRACKING"),
                   help="as `tafs evaluate --tracking`: record the evaluations on the MLflow server")
    a = p.parse_args(argv)
    points = gather(a.prompts, parse_json_arg(a.cfg, "eval"), a.sampler, a.nfe, a.name, Path(a.out),
                    read_info(a.done))
    log_points(points)
    record_evals(a.tracking, a.out)


def finish(a: argparse.Namespace, job: ShardJob | None, points: list[dict], info: dict[str, str]) -> None:
    """After an evaluate command: a scatter job writes its done file; a whole evaluation records what it wrote."""
    if job is not None:
        write_done(a.done, job, points, info)
    else:
        record_evals(a.tracking, a.out)


def record_evals(tracking: str | None, out: str) -> None:
    """With a tracking server: the evaluations written under ``out``, recorded now (the DAG's ingest adds the rest)."""
    if tracking:
        from tafs.tracking.live import Target, eval_outputs

        eval_outputs(Target.parse(tracking), out)


def log_points(points: Sequence[dict]) -> None:
    """One log line per evaluation point: its metrics' means, or (a scatter job) the shards it sampled."""
    for m in points:
        what = f"shards {m['shards']} ({m['generated']} sampled now)" if "shards" in m else \
            " ".join(f"{k} {v['mean']:.3f}" for k, v in m["metrics"].items())
        log.info("%s %s@%d: %s", m["model"], m["sampler"], m["nfe"], what)
