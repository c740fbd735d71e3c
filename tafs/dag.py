"""What the Snakemake rules need from the config, computed once when the DAG is built (rules stay thin).

``Plan(config)`` resolves the task, builds the grid, checks every input a job will read (the user's prompt
files and the metadata their rewards need, the base model folder) and answers the rules' questions: the
paths of the results layout, each job's config as JSON, the models the sweep evaluates, job resources.
Any error is raised here, naming the config key or the file and line, before a job starts.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from tafs.config import ConfigError, deep_merge
from tafs.grid import Grid, build_grid, eval_models
from tafs.paths import Layout, ModelRef
from tafs.tasks import registry as tasks
from tafs.tasks.base import TaskSpec, check_prompt_files


class Plan:
    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.layout = Layout(config["results"])
        self.task: TaskSpec = tasks.from_config(config)
        if self.task.prompt_files:  # a user task: its files exist now, so check them now
            check_prompt_files(self.task)
        self.grid: Grid = build_grid(config)
        self._check_base_model()

    # -- inputs -----------------------------------------------------------------------------------
    def _check_base_model(self) -> None:
        path = self.config["model"].get("pretrained")
        if path:
            from tafs.models.loading import pipeline_class

            try:
                pipeline_class(path)
            except (FileNotFoundError, ValueError) as e:
                raise ConfigError(f"model.pretrained: {e}") from e

    def base_model(self) -> str:
        """A user-supplied model folder, or the toy base the DAG pretrains."""
        return self.config["model"].get("pretrained") or str(self.layout.base_model)

    def prompt_sources(self, split: str) -> list[str]:
        """The user's prompt file of a split (an input of the prompts rule, so edits re-run what follows)."""
        return [self.task.prompt_files[split]] if self.task.prompt_files else []

    def tasks_json(self) -> str:
        return quoted(self.config.get("tasks") or {})

    # -- rewards and their models -----------------------------------------------------------------
    def _uses_dag_scorer(self, name: str) -> bool:
        kwargs = (self.config.get("reward_models") or {}).get(name, {})
        return "path" in kwargs and not kwargs["path"]

    def reward_kwargs(self) -> dict[str, dict]:
        """Factory kwargs of every configured reward model; `path: null` = the toy scorer the DAG trains."""
        models = self.config.get("reward_models") or {}
        return {name: {**kw, "path": str(self.layout.scorer_model)} if self._uses_dag_scorer(name) else dict(kw)
                for name, kw in models.items()}

    def scorer_inputs(self, names) -> list[str]:
        """The DAG-trained scorer folder, when one of the rewards ``names`` uses it."""
        return [str(self.layout.scorer_model)] if any(self._uses_dag_scorer(n) for n in names) else []

    def eval_reward_names(self) -> list[str]:
        return [m.reward for m in self.task.metrics]

    # -- job configs ------------------------------------------------------------------------------
    def eval_cfg(self) -> dict[str, Any]:
        kwargs = self.reward_kwargs()
        names = self.eval_reward_names()
        return {**self.config["eval"], "metrics": self.task.eval_rewards(), "chance": self.task.chance,
                "reward_kwargs": {n: kwargs[n] for n in names if n in kwargs}}

    def train_cfg(self, run: str, seed: int) -> dict[str, Any]:
        """The run's merged training config at this seed, with the kwargs of the rewards it trains on."""
        cfg = deep_merge(self.grid.runs[run].train, {"seed": seed})
        kwargs = self.reward_kwargs()
        cfg["reward_kwargs"] = {n: kwargs[n] for n in cfg["advantage"]["rewards"] if n in kwargs}
        return cfg

    def train_rewards(self, run: str) -> list[str]:
        return list(self.grid.runs[run].train["advantage"]["rewards"])

    # -- what the sweep makes ---------------------------------------------------------------------
    def eval_prompts(self) -> str:
        return str(self.layout.prompts(self.config["eval"].get("split", "test")))

    def eval_metrics_files(self) -> list[str]:
        """metrics.json of every (model, seed, sampler, NFE) the sweep evaluates."""
        out = []
        for m in eval_models(self.config, self.grid):
            for seed in m["seeds"]:
                ref = ModelRef.base() if m["kind"] == "base" else ModelRef.run(m["name"], seed)
                out += [str(self.layout.eval_metrics(ref, s, n)) for s in m["samplers"] for n in m["nfe"]]
        return out

    def train_summaries(self) -> list[str]:
        return [str(self.layout.train_summary(run, s)) for run in self.grid.runs for s in self.config["seeds"]]

    # -- job resources (config `resources:`; docs/cluster.md) --------------------------------------
    def stage_resources(self, stage: str) -> dict[str, Any]:
        """Snakemake resources of a stage group in config `resources:` (pretrain, train, eval, default).

        gpu > 0: `gpu`, `cpus_per_gpu` and `nodes` = 1 (the Slurm plugin submits --gpus=N --cpus-per-gpu=C
        --nodes=1). gpu == 0 or a CPU stage: no GPU resource at all, and `cpus_per_task` = the rule's threads
        (the plugin's `cpus_per_task` takes precedence over `cpus_per_gpu`, so it is only set for CPU jobs).
        `runtime` is in minutes, `mem_mb` in MB.
        """
        spec = self.config["resources"][stage]
        res: dict[str, Any] = {"mem_mb": spec["mem_mb"], "runtime": spec["runtime"]}
        gpus = int(spec.get("gpu", 0))
        if gpus > 0:
            res.update(gpu=gpus, cpus_per_gpu=int(spec.get("cpus_per_gpu", 4)), nodes=1)
        else:
            res["cpus_per_task"] = _threads_of_job
        return res


def _threads_of_job(wildcards: Any, threads: int) -> int:
    return threads


def quoted(obj: Any) -> str:
    """One shell-quoted JSON argument (``--cfg``)."""
    return shlex.quote(json.dumps(obj, sort_keys=True))


def job_gpus(resources: Any) -> int:
    """GPUs a job was given: its `gpu` resource (also after --set-resources), 0 when absent."""
    return int(resources.get("gpu", 0) or 0)


def tafs_launcher(resources: Any) -> str:
    """The command prefix that runs `tafs` for a job: one process, or accelerate with one per GPU.

    With gpu > 1 the job runs `accelerate launch` with --num_processes = gpu on this node; the
    rendezvous port is picked when the job starts, on the node it runs on (`tafs free-port`).
    """
    gpus = job_gpus(resources)
    if gpus > 1:
        return ("accelerate launch --multi_gpu --num_processes {n} --num_machines 1 "
                "--mixed_precision no --dynamo_backend no "
                "--main_process_port $(python -m tafs free-port) -m tafs").format(n=gpus)
    return "python -m tafs"

