"""What the Snakemake rules need from the config, computed once when the DAG is built (rules stay thin).

``Plan(config)`` resolves the task, builds the grid, checks every input a job will read (the user's prompt
files and the metadata their rewards need, the model folders) and answers the rules' questions: the paths of
the results layout, where each model comes from (``tafs.sources``), each job's config as JSON, the models
the sweep evaluates, job resources. Any error is raised here, naming the config key or the file and line,
before a job starts.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from tafs.config import ConfigError, deep_merge
from tafs.datafiles import RemoteFile
from tafs.grid import Grid, build_grid, eval_models, method_spec, run_seeds
from tafs.hub import HubModel
from tafs.job_launch import node_resources
from tafs.paths import Layout, ModelRef
from tafs.sources import Sources, Tiny
from tafs.tasks import registry as tasks
from tafs.tasks.base import BuiltModel, TaskSpec, check_prompt_files


class Plan:
    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.layout = Layout(config["results"])
        self.task: TaskSpec = tasks.from_config(config)
        if self.task.local_files():  # a user task: its files exist now, so check them now
            check_prompt_files(self.task)
        self.grid: Grid = build_grid(config)
        self.sources = Sources(config, self.layout, self.task.builds, f"task {self.task.name!r}")
        self._check_job_configs()
        self._check_train_metadata()
        self.sources.check_buildable(self.used_rewards())

    def _check_train_metadata(self) -> None:
        """The training prompts carry the metadata every run's rewards need (an ablation's reward mix too), when
        the prompts can be had now: generated, or a local file. A remote file is checked by the prompts rule."""
        from tafs.prompts import check_metadata
        from tafs.rewards import registry

        needs = {n: registry.spec(n).needs for n in self.all_train_rewards() if registry.spec(n).needs}
        if not needs or isinstance(self.task.prompt_files.get("train"), RemoteFile):
            return
        source = self.task.prompt_files.get("train") or f"task {self.task.name!r} (train prompts)"
        prompts = self.task.load_prompts("train")
        for reward, keys in needs.items():
            try:
                check_metadata(prompts, {reward: keys}, str(source))
            except ConfigError as e:
                raise ConfigError(f"{e} (runs that train on it: {self.all_train_rewards()[reward]})") from e

    def all_train_rewards(self) -> dict[str, list[str]]:
        """Every reward some run trains on (the task's, and those of methods and ablations) -> those runs."""
        out: dict[str, list[str]] = {}
        for name, run in sorted(self.grid.runs.items()):
            for r in run.train["advantage"]["rewards"]:
                out.setdefault(r, []).append(name)
        return dict(sorted(out.items()))

    def _check_job_configs(self) -> None:
        """Every job's config goes through the validation the job itself applies: each run (method preset or
        ablation) at each seed, the evaluation, the model options, each baseline. Errors name where it came from."""
        from tafs.config import from_dict
        from tafs.evaluate import EvalConfig
        from tafs.evaluate_pipeline import BaselineConfig
        from tafs.models.options import ModelOptions
        from tafs.train.trainer import TrainConfig, check_config

        for run, spec in self.grid.runs.items():
            for seed in self.seeds(run):
                try:
                    check_config(from_dict(TrainConfig, self.train_cfg(run, seed), "train"))
                except ValueError as e:  # ConfigError is a ValueError
                    raise ConfigError(f"{spec.origin}, run {run!r} (seed {seed}): {e}") from e
        for name in self.config["methods"]:  # presets no table uses yet are checked too
            try:
                check_config(from_dict(TrainConfig, method_spec(self.config, name, f"methods.{name}", self.task).train,
                                       "train"))
            except ValueError as e:
                raise ConfigError(f"methods.{name} (with `train:`): {e}") from e
        checks = [("eval", lambda: from_dict(EvalConfig, {**self.eval_cfg(), "sampler": "ode"}, "eval"))]
        checks += [(f"model ({stage})", lambda st=stage: from_dict(ModelOptions, self.model_options(st), "model"))
                   for stage in ("train", "eval")]
        checks += [(f"baselines.{b}", lambda b=b: from_dict(BaselineConfig, self.baseline_cfg(b), f"baselines.{b}"))
                   for b in self.config.get("baselines") or {}]
        for where, check in checks:
            try:
                check()
            except ValueError as e:
                raise ConfigError(f"{where}: {e}") from e

    # -- models -----------------------------------------------------------------------------------
    def base_model(self) -> str:
        """A local folder, a download, or the base the DAG builds (the task's, a tiny pipeline)."""
        return self.sources.base_path()

    def tiny_base(self) -> str | None:
        """The tiny random pipeline family the DAG builds as the base (`model.pretrained: {tiny: ...}`), if any."""
        base = self.sources.base
        return base.family if isinstance(base, Tiny) else None

    def built_models(self) -> dict[str, BuiltModel]:
        """The models the task builds for this config (rule build_model), by folder name under results/models."""
        return self.sources.built_models(self.used_rewards())

    def used_rewards(self) -> list[str]:
        """The rewards a job reads: those scored at evaluation and those any run trains on."""
        return sorted({*self.eval_reward_names(), *(r for run in self.grid.runs for r in self.train_rewards(run))})

    def build_model_args(self, name: str) -> str:
        """The command line of ``python -m tafs`` that builds model ``name`` (without --out / --threads)."""
        b = self.built_models()[name]
        args = f"{b.command} --cfg {quoted(self.config.get(b.config_key) or {})}"
        return args + (f" --ckpt-dir {self.layout.checkpoints(b.command)}" if b.resumes else "")

    def downloads(self) -> dict[str, HubModel]:
        return self.sources.downloads()

    def model_options(self, stage: str) -> dict[str, Any]:
        """The model options of a job (config `model:` but `pretrained`); evaluation may change the resolution."""
        opts = {k: v for k, v in self.config["model"].items() if k != "pretrained"}
        if stage == "eval" and self.config["eval"].get("resolution"):
            opts["resolution"] = self.config["eval"]["resolution"]
        return opts

    def train_model_options(self) -> dict[str, Any]:
        """The model options of a training job less those that only trade memory for compute (passed untracked)."""
        from tafs.train.identity import MODEL_RUNTIME_KEYS, split_keys

        return split_keys(self.model_options("train"), MODEL_RUNTIME_KEYS)[0]

    def prompt_sources(self, split: str) -> list[str]:
        """The prompt file of a split, if it has one (an input of the prompts rule, so edits re-run what
        follows): the user's file, or where the fetch_data rule puts a remote one."""
        file = self.task.prompt_files.get(split)
        if file is None:
            return []
        return [str(file.local_path(self.sources.cache))] if isinstance(file, RemoteFile) else [file]

    def prompt_excludes(self, split: str) -> list[str]:
        """The test prompts the training split must not contain (a task with disjoint splits)."""
        return [str(self.layout.prompts("test"))] if split == "train" and self.task.disjoint_splits else []

    def data_files(self) -> dict[str, RemoteFile]:
        """Every remote prompt file, by its file name under ``<hub.cache>/data``."""
        return {f.name: f for f in self.task.remote_files().values()}

    def tasks_json(self) -> str:
        return quoted(self.config.get("tasks") or {})

    # -- rewards and their models -----------------------------------------------------------------
    def reward_kwargs(self) -> dict[str, dict]:
        """Factory kwargs of every configured reward model, each model the DAG provides replaced by its folder
        (`path: null` = the model the task builds; `{hub: ...}` = its download; `{tiny: name}` = built)."""
        models = self.config.get("reward_models") or {}
        return {name: self.sources.reward_kwargs(name, kw or {}) for name, kw in models.items()}

    def tiny_rewards(self) -> list[str]:
        return self.sources.tiny_rewards()

    def reward_inputs(self, names) -> list[str]:
        """The model folders the DAG makes (built by the task, downloads) for the rewards ``names``."""
        return sorted({f for n in names for f in self.sources.reward_outputs(n)})

    def eval_reward_names(self) -> list[str]:
        return [m.reward for m in self.task.metrics]

    # -- job configs ------------------------------------------------------------------------------
    def eval_cfg(self) -> dict[str, Any]:
        kwargs = self.reward_kwargs()
        names = self.eval_reward_names()
        # resolution: a model option; shard_jobs: how the DAG splits the evaluation, not what a job computes
        section = {k: v for k, v in self.config["eval"].items() if k not in ("resolution", "shard_jobs")}
        averaged = self.task.category_averaged()
        return {**section, "metrics": self.task.eval_rewards(), "chance": self.task.chance,
                **({"category_mean": averaged} if averaged else {}),
                "reward_kwargs": {n: kwargs[n] for n in names if n in kwargs}}

    def train_cfg(self, run: str, seed: int) -> dict[str, Any]:
        """The run's merged training config at this seed, with the kwargs of the rewards it trains on."""
        cfg = deep_merge(self.grid.runs[run].train, {"seed": seed})
        kwargs = self.reward_kwargs()
        cfg["reward_kwargs"] = {n: kwargs[n] for n in cfg["advantage"]["rewards"] if n in kwargs}
        if cfg.get("eval_every"):  # a runtime setting (tafs.train.identity): the job's untracked part carries it
            cfg["eval_job"] = self.train_eval_job(run)
        return cfg

    def train_job(self, run: str, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(identity, runtime) of a training job (tafs.train.identity): the identity, a rule parameter, names the
        models the DAG provides as the config does (not their folders under ``hub.cache``); the runtime part, an
        untracked parameter, has the memory/speed settings and those folders."""
        from tafs.train.identity import MODEL_RUNTIME_KEYS, split_keys, split_train

        cfg = self.train_cfg(run, seed)
        identity, runtime = split_train(cfg)
        declared = self.config.get("reward_models") or {}
        for (name, key) in self.sources.reward_models:
            if name in identity.get("reward_kwargs", {}):
                identity["reward_kwargs"][name][key] = declared[name][key]
                runtime.setdefault("reward_kwargs", {}).setdefault(name, {})[key] = cfg["reward_kwargs"][name][key]
        return identity, {"train": runtime, "model": split_keys(self.model_options("train"), MODEL_RUNTIME_KEYS)[1]}

    def train_eval_job(self, run: str) -> dict[str, Any]:
        """The in-training evaluation of a run (train.eval_every, tafs/train/periodic_eval.py): the evaluation
        prompt file, the task's metrics, the run's declared evaluation sampler at the tables' NFE."""
        return {"prompts": self.eval_prompts(), "eval": {**self.eval_cfg(), "sampler": self.grid.runs[run].eval_sampler,
                                                          "nfe": int(self.config["tables"]["main_nfe"])}}

    def train_eval_inputs(self, run: str) -> list[str]:
        """What the in-training evaluation reads (nothing when it is off): the prompt file, the metrics' models."""
        if not self.grid.runs[run].train.get("eval_every"):
            return []
        return [self.eval_prompts(), *self.reward_inputs(self.eval_reward_names())]

    def train_rewards(self, run: str) -> list[str]:
        return list(self.grid.runs[run].train["advantage"]["rewards"])

    # -- what the sweep makes ---------------------------------------------------------------------
    def eval_prompts(self) -> str:
        return str(self.layout.prompts(self.config["eval"].get("split", "test")))

    def eval_metrics_files(self) -> list[str]:
        """metrics.json of every (model, seed, sampler, NFE) the sweep evaluates: base, runs, baselines."""
        out = []
        for m in eval_models(self.config, self.grid):
            for seed in m["seeds"]:
                ref = {"base": ModelRef.base(), "run": ModelRef.run(m["name"], seed),
                       "baseline": ModelRef.baseline(m["name"])}[m["kind"]]
                out += [str(self.layout.eval_metrics(ref, s, n)) for s in m["samplers"] for n in m["nfe"]]
        return out

    def eval_shard_jobs(self) -> int:
        """Scatter jobs per model's evaluation (config ``eval.shard_jobs``; 1: one job writes every point)."""
        return int(self.config["eval"].get("shard_jobs", 1))

    def eval_run_groups(self) -> list[tuple[str, list[str], list[int], list[str]]]:
        """(rule name, samplers, NFEs, runs) per distinct (samplers, NFEs) of the runs' sweeps (tafs.grid.run_nfes):
        one rule each, since a rule's outputs are fixed. ``eval_run`` is the group that sweeps ``sweep.run_nfe``
        (the first such when runs differ in their samplers)."""
        groups: dict[tuple[tuple[str, ...], tuple[int, ...]], list[str]] = {}
        for m in eval_models(self.config, self.grid):
            if m["kind"] == "run":
                groups.setdefault((tuple(m["samplers"]), tuple(m["nfe"])), []).append(m["name"])
        full, out, names = tuple(self.config["sweep"]["run_nfe"]), [], set()
        for (samplers, nfes), runs in groups.items():
            name = "eval_run" if nfes == full else "eval_run_nfe" + "_".join(map(str, nfes))
            if name in names:
                name += "_" + "_".join(samplers)
            names.add(name)
            out.append((name, list(samplers), list(nfes), runs))
        return out

    # -- baselines (evaluation-only models, Table 1) ----------------------------------------------
    def baseline_inputs(self, name: str) -> dict[str, str]:
        model, lora = self.sources.baselines[name]
        comps = {f"component_{c}": self.sources.path(m) for (b, c), m in self.sources.components.items() if b == name}
        return {"model": self.sources.path(model), **({"lora": self.sources.path(lora)} if lora else {}), **comps}

    def baseline_cfg(self, name: str) -> dict[str, Any]:
        """tafs.evaluate_pipeline.BaselineConfig of a baseline, as JSON."""
        entry = self.config["baselines"][name]
        lora = entry.get("lora") or {}
        cfg = {k: entry[k] for k in ("guidance_scale", "dtype", "pipeline_kwargs", "offload") if k in entry}
        cfg["resolution"] = entry.get("resolution") or self.config["eval"].get("resolution")
        if lora:
            cfg.update(lora_weight_name=lora.get("weight_name"), lora_scale=float(lora.get("scale", 1.0)))
        cfg["components"] = {c: {"path": self.sources.path(self.sources.components[(name, c)]), "class": spec["class"],
                                 "kwargs": spec.get("kwargs", {})}
                             for c, spec in (entry.get("components") or {}).items()}
        return cfg

    def baseline_nfe(self, name: str) -> list[int]:
        return list(self.config["baselines"][name]["nfe"])

    def train_summaries(self) -> list[str]:
        return [str(self.layout.train_summary(run, s)) for run in self.grid.runs for s in self.seeds(run)]

    def seeds(self, run: str) -> list[int]:
        """The run's training seeds (tafs.grid.run_seeds: ``ablations.seeds`` for the ablation-only rows)."""
        return run_seeds(self.config, self.grid, run)

    # -- MLflow ---------------------------------------------------------------------------------------
    def tracking_uri(self) -> str:
        """The MLflow server the jobs log to live (`tracking.uri`), else the DAG's single-writer SQLite store."""
        return (self.config.get("tracking") or {}).get("uri") or self.layout.mlflow_uri

    def tracking_target(self) -> str | None:
        """The JSON that tells jobs where to log live (the server, this config's experiment, the results root),
        or None without a server. Jobs get it through the environment (TAFS_TRACKING), not a rule parameter:
        as a parameter, any config change would re-run every job."""
        uri = (self.config.get("tracking") or {}).get("uri")
        if not uri:
            return None
        from tafs.config import redact
        from tafs.tracking.payload import experiment_name

        return json.dumps({"uri": uri, "experiment": experiment_name(redact(self.config)),
                           "results": str(self.layout.root)})

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
            if spec.get("gpu_model"):
                res["gpu_model"] = spec["gpu_model"]
        else:
            res["cpus_per_task"] = _threads_of_job
        res.update(node_resources(spec))  # nodes > 1 (train only): one job over several nodes
        # partition, account, QOS and node features per stage, so that GPU stages go to the GPU partition and CPU
        # stages do not (the plugin's resource names: qos and constraint without the slurm_ prefix)
        for key, resource in SLURM_KEYS.items():
            if spec.get(key):
                res[resource] = spec[key]
        return res

    def stage_threads(self, stage: str) -> int:
        """Threads of a stage's jobs = the CPUs it asks Slurm for: ``cpus_per_gpu`` per process on a GPU stage
        (every process of a multi-GPU job gets its GPU's share), else config ``threads``."""
        spec = self.config["resources"][stage]
        if int(spec.get("gpu", 0)) > 0:
            return int(spec.get("cpus_per_gpu", 4))
        return int(self.config["threads"])


SLURM_KEYS = {"slurm_partition": "slurm_partition", "slurm_account": "slurm_account", "slurm_qos": "qos",
              "constraint": "constraint"}  # config `resources.<stage>` key -> the Slurm executor plugin's resource


def _threads_of_job(wildcards: Any, threads: int) -> int:
    return threads


def quoted(obj: Any) -> str:
    """One shell-quoted JSON argument (``--cfg``)."""
    return shlex.quote(json.dumps(obj, sort_keys=True))


class Untracked:
    """A rule parameter Snakemake does not track: its ``params`` rerun trigger compares only builtin values
    (persistence ``_params`` drops the others), so a job is not re-run when this one changes. The shell command
    gets ``str()``, e.g. a quoted JSON argument (``--runtime``: tafs.train.identity) or the launcher."""

    def __init__(self, text: str):
        self.text = text

    def __str__(self) -> str:
        return self.text
