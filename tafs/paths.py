"""The results layout, in one place: the rules, the tables, the MLflow ingest and the CLI all use it.

::

    {root}/config.json, manifest.json               the effective config; every model, run and table row
    {root}/prompts/{split}.jsonl                    the task's prompt files (train, test)
    {root}/models/{name}/                           models the DAG builds (the task's TaskSpec.builds, a tiny base)
    {root}/runs/{run}/seed{S}/                      adapter/, metrics.jsonl, train_summary.json
    {root}/eval/{model}/{sampler}/nfe{N}/           metrics.json, samples.png; {model} is a ModelRef key:
                                                    base | runs/{run}/seed{S} | baselines/{name}
        .../nfe{N}/shards/shard{i}.json, .pt        one prompt shard's per-image scores, its grid images
                                                    (what a killed evaluation resumes from; eval_shard_file)
    {root}/eval/{model}/shard_jobs/job{j}of{K}.json scatter job j of K done (eval.shard_jobs > 1: its shards,
                                                    the model's info for the gather job; eval_shard_job)
    {root}/tables/, figures/, report.html           Tables 1-7, Figure 4, the Snakemake report
    {root}/mlflow.db, mlflow/                       MLflow store and artifacts
    {root}/logs/, checkpoints/                      one log per job; resumable state (outside outputs)
    {checkpoints}/runs/{run}/seed{S}/snapshots/iter{N:05d}/   intermediate adapters (train.snapshot_every)
    {checkpoints}/runs/{run}/seed{S}/eval_grids/iter{N:05d}.png  in-training evaluation grids (train.eval_every)

Every method returns a ``Path``; wildcard strings (``"{run}"``) pass through, so the rules build their
patterns from the same functions that the readers use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

MODEL_KINDS = ("base", "run", "baseline")
_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")  # no leading dot: temporary folders are skipped
_SEED = re.compile(r"seed(\d+)")
_NFE = re.compile(r"nfe(\d+)")


@dataclass(frozen=True)
class ModelRef:
    """A model that the evaluation sweep samples: the base, a trained run at one seed, or a baseline."""

    kind: str
    name: str
    seed: int | str | None = None

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {self.kind!r}")

    @classmethod
    def base(cls) -> "ModelRef":
        return cls("base", "base")

    @classmethod
    def run(cls, name: str, seed: int | str) -> "ModelRef":
        return cls("run", name, seed)

    @classmethod
    def baseline(cls, name: str) -> "ModelRef":
        return cls("baseline", name)

    @property
    def key(self) -> str:
        """Its folder under ``eval/`` and its identity in MLflow."""
        if self.kind == "run":
            return f"runs/{self.name}/seed{self.seed}"
        return "base" if self.kind == "base" else f"baselines/{self.name}"


@dataclass(frozen=True)
class EvalEntry:
    """One finished (or expected) evaluation point."""

    model: ModelRef
    sampler: str
    nfe: int
    folder: Path


class Layout:
    """Paths under one results root."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- run-level files --------------------------------------------------------------------------
    @property
    def config_json(self) -> Path:
        return self.root / "config.json"

    @property
    def manifest_json(self) -> Path:
        return self.root / "manifest.json"

    def prompts(self, split: str) -> Path:
        return self.root / "prompts" / f"{split}.jsonl"

    @property
    def base_model(self) -> Path:
        return self.root / "models" / "base"

    def built_model(self, name: str) -> Path:
        """A model the task builds in the DAG (``TaskSpec.builds``: the toy base and scorer)."""
        return self.root / "models" / name

    def tiny_reward(self, name: str) -> Path:
        """A tiny random reward model the DAG builds (`{tiny: name}`; tafs.rewards.tiny)."""
        return self.root / "models" / "tiny_rewards" / name

    # -- training ---------------------------------------------------------------------------------
    def run_dir(self, run: str, seed: int | str) -> Path:
        return self.root / "runs" / run / f"seed{seed}"

    def adapter(self, run: str, seed: int | str) -> Path:
        return self.run_dir(run, seed) / "adapter"

    def train_metrics(self, run: str, seed: int | str) -> Path:
        return self.run_dir(run, seed) / "metrics.jsonl"

    def train_summary(self, run: str, seed: int | str) -> Path:
        return self.run_dir(run, seed) / "train_summary.json"

    def checkpoints(self, stage: str, *parts: str) -> Path:
        """Resumable state, kept outside Snakemake's declared outputs (it deletes those before a job)."""
        return self.root.joinpath("checkpoints", stage, *parts)

    def run_checkpoints(self, run: str, seed: int | str) -> Path:
        return self.checkpoints("runs", run, f"seed{seed}")

    # -- evaluation -------------------------------------------------------------------------------
    def eval_model_dir(self, model: ModelRef) -> Path:
        """The folder of one model's evaluations (one job writes every sampler and NFE below it)."""
        return self.root / "eval" / model.key

    def eval_sweep(self, model: ModelRef, sampler: str) -> Path:
        """The folder of one model's sweep with one sampler (every NFE below it)."""
        return self.eval_model_dir(model) / sampler

    def eval_dir(self, model: ModelRef, sampler: str, nfe: int | str) -> Path:
        return self.eval_sweep(model, sampler) / f"nfe{nfe}"

    def eval_metrics(self, model: ModelRef, sampler: str, nfe: int | str) -> Path:
        return self.eval_dir(model, sampler, nfe) / "metrics.json"

    def eval_samples(self, model: ModelRef, sampler: str, nfe: int | str) -> Path:
        return self.eval_dir(model, sampler, nfe) / "samples.png"

    def eval_shard_job(self, model: ModelRef, job: int | str, jobs: int) -> Path:
        """Written when scatter job ``job`` of ``jobs`` (``eval.shard_jobs``) of a model's evaluation is done."""
        return self.eval_model_dir(model) / "shard_jobs" / f"job{job}of{jobs}.json"

    # -- report -----------------------------------------------------------------------------------
    @property
    def tables_dir(self) -> Path:
        return self.root / "tables"

    def table(self, name: str, ext: str) -> Path:
        return self.tables_dir / f"{name}.{ext}"

    @property
    def captions(self) -> Path:
        return self.tables_dir / "captions.json"

    def figure(self, name: str, ext: str = "png") -> Path:
        return self.root / "figures" / f"{name}.{ext}"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    # -- tracking and logs ------------------------------------------------------------------------
    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    def log(self, *parts: str) -> Path:
        return self.root.joinpath("logs", *parts)

    # -- discovery (what exists) ------------------------------------------------------------------
    def build_metrics(self) -> Iterator[tuple[str, Path]]:
        """(model folder name, metrics file) of every model the DAG built that recorded how
        (``models/<name>/<what>_metrics.json``: the toy base's pretraining, the toy scorer's training)."""
        for folder, _ in _children(self.root / "models", _NAME):
            files = sorted(folder.glob("*_metrics.json"))
            if files:
                yield folder.name, files[0]

    def finished_runs(self) -> Iterator[tuple[str, int, Path]]:
        """(run, seed, folder) of every run folder holding a train_summary.json, in a stable order."""
        for run_dir, _ in _children(self.root / "runs", _NAME):
            for seed_dir, m in _children(run_dir, _SEED):
                if (seed_dir / "train_summary.json").is_file():
                    yield run_dir.name, int(m.group(1)), seed_dir

    def finished_evals(self) -> Iterator[EvalEntry]:
        """Every evaluation point holding a metrics.json: the base, each run and seed, each baseline."""
        models = [(ModelRef.base(), self.root / "eval" / "base")]
        for run_dir, _ in _children(self.root / "eval" / "runs", _NAME):
            models += [(ModelRef.run(run_dir.name, int(m.group(1))), d) for d, m in _children(run_dir, _SEED)]
        models += [(ModelRef.baseline(d.name), d) for d, _ in _children(self.root / "eval" / "baselines", _NAME)]
        for model, folder in models:
            for sampler_dir, _ in _children(folder, _NAME):
                for nfe_dir, m in _children(sampler_dir, _NFE):
                    if (nfe_dir / "metrics.json").is_file():
                        yield EvalEntry(model, sampler_dir.name, int(m.group(1)), nfe_dir)


def eval_shard_file(eval_dir: Path, i: int, suffix: str) -> Path:
    """Shard ``i`` of an evaluation point (``Layout.eval_dir``): ``.json`` its scores, ``.pt`` its grid images."""
    return Path(eval_dir) / "shards" / f"shard{i}{suffix}"


def snapshots_dir(ckpt_dir: str | Path) -> Path:
    """A run's intermediate adapters: in its checkpoint folder, outside the declared outputs, so that
    Snakemake does not delete them when it re-runs the job."""
    return Path(ckpt_dir) / "snapshots"


def snapshot_dir(ckpt_dir: str | Path, iteration: int) -> Path:
    """The adapter written after ``iteration`` iterations."""
    return snapshots_dir(ckpt_dir) / f"iter{iteration:05d}"


def eval_grids_dir(ckpt_dir: str | Path) -> Path:
    """A run's in-training evaluation grids (train.eval_every), beside its snapshots."""
    return Path(ckpt_dir) / "eval_grids"


def eval_grid_png(ckpt_dir: str | Path, iteration: int) -> Path:
    """The sample grid of the in-training evaluation after ``iteration`` iterations."""
    return eval_grids_dir(ckpt_dir) / f"iter{iteration:05d}.png"


def _children(parent: Path, pattern: re.Pattern[str]) -> list[tuple[Path, re.Match[str]]]:
    """Child folders whose whole name matches ``pattern``, numbers compared as numbers (nfe4 < nfe28)."""
    if not parent.is_dir():
        return []
    found = [(p, m) for p in parent.iterdir() if p.is_dir() and (m := pattern.fullmatch(p.name))]
    return sorted(found, key=lambda pm: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", pm[0].name)])
