"""What a task is (DESIGN §11): prompt sets per split, the rewards it trains on, the metrics it reports and
the categories its tables break down by. Data and names only: the trainer and the evaluator never branch on
a task.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from tafs.config import ConfigError
from tafs.datafiles import RemoteFile, parse_remote
from tafs.prompts import Prompt, read_prompt_file

SPLITS = ("train", "test")
DOMAINS = ("in", "out")


@dataclass(frozen=True)
class MetricSpec:
    """A column of the tables: the value of reward ``reward`` on the evaluation images, named ``key``."""

    key: str  # its name in metrics.json and the tables
    reward: str  # a reward of the registry
    domain: str  # "in" (trained on) or "out" (held out)
    label: str  # how tables name it
    percent: bool = False  # a fraction shown in %
    average: str = "images"  # "categories": the mean of the per-category means (GenEval's overall score)

    def __post_init__(self) -> None:
        if self.domain not in DOMAINS:
            raise ConfigError(f"metric {self.key!r}: domain must be one of {DOMAINS}, got {self.domain!r}")
        if self.average not in ("images", "categories"):
            raise ConfigError(f"metric {self.key!r}: average must be 'images' or 'categories', got {self.average!r}")


@dataclass(frozen=True)
class BuiltModel:
    """A model a task's world builds in the DAG instead of loading one (the toy world: its base and its learned
    scorer). The generic rule ``build_model`` runs ``python -m tafs <command> --cfg <config[config_key]> --out
    <results>/models/<name> --threads N`` (plus ``--ckpt-dir`` when it ``resumes``) with the ``pretrain`` stage's
    resources. ``provides``: ``"base"`` (stands in for ``model.pretrained: null``) or ``"reward:<name>"`` (for a
    ``reward_models.<name>`` kwarg set to null, e.g. ``clip: {path: null}``). ``metrics_file``: what MLflow logs
    from the folder."""

    name: str
    command: str
    config_key: str
    provides: str
    metrics_file: str | None = None
    resumes: bool = False

    def __post_init__(self) -> None:
        if self.provides != "base" and not self.provides.startswith("reward:"):
            raise ConfigError(f"built model {self.name!r}: provides must be 'base' or 'reward:<name>', "
                              f"got {self.provides!r}")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    rewards: Mapping[str, float]  # the training reward mix (name -> weight)
    metrics: tuple[MetricSpec, ...]
    # split -> a JSONL / .txt file: a local path or a RemoteFile (URL + sha256, fetched by the fetch_data rule)
    prompt_files: Mapping[str, str | RemoteFile] = field(default_factory=dict)
    generator: str | None = None  # "module:function(split) -> list[Prompt]": the splits without a file
    categories: tuple[str, ...] = ()
    category_metric: str | None = None  # the metric the tables break down by category
    category_label: str | None = None  # header of those columns (default: "<metric label> by category")
    chance: str | None = None  # "module:function(prompts, seed) -> {metric: value}": chance levels
    caption_prefix: str = ""  # e.g. "Toy analogue of" before "Table 1" in captions
    headline: str | None = None  # the metric Figure 4 shows first (default: the first metric)
    category_key: str | None = None  # a metadata key that gives a prompt's category when its line has none
    disjoint_splits: bool = False  # drop training prompts whose text is a test prompt (as Flow-GRPO filters GenEval)
    table1_task: str | None = None  # the task Table 1 trains on when not this one (the toy preference task's is the toy
                                    # composition task, as the paper's Table 1 is GenEval); config tables.table1.task
    builds: tuple[BuiltModel, ...] = ()  # models its world builds in the DAG (the toy base and scorer)

    def __post_init__(self) -> None:
        keys = [m.key for m in self.metrics]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"task {self.name!r}: metric keys repeat: {keys}")
        if self.category_metric is not None and self.category_metric not in keys:
            raise ConfigError(f"task {self.name!r}: category_metric {self.category_metric!r} is not one of its "
                              f"metrics {keys}")
        if self.generator is None and set(self.prompt_files) != set(SPLITS):
            raise ConfigError(f"task {self.name!r}: prompts must name a file for each split {list(SPLITS)}, "
                              f"got {sorted(self.prompt_files)}")
        unknown = sorted(set(self.prompt_files) - set(SPLITS))
        if unknown:
            raise ConfigError(f"task {self.name!r}: unknown split(s) {unknown}; expected {list(SPLITS)}")

    def built(self, provides: str) -> BuiltModel | None:
        """The model this task builds for ``provides`` ("base" or "reward:<name>"), if any."""
        return next((b for b in self.builds if b.provides == provides), None)

    @property
    def headline_metric(self) -> str:
        return self.headline or self.metrics[0].key

    def metric(self, key: str) -> MetricSpec:
        for m in self.metrics:
            if m.key == key:
                return m
        raise ConfigError(f"task {self.name!r} has no metric {key!r}; its metrics: {[m.key for m in self.metrics]}")

    def domain(self, domain: str) -> list[str]:
        return [m.key for m in self.metrics if m.domain == domain]

    def eval_rewards(self) -> dict[str, str]:
        """metric key -> reward name: what the evaluator scores."""
        return {m.key: m.reward for m in self.metrics}

    def category_averaged(self) -> list[str]:
        """Metric keys whose overall value is the mean of the per-category means."""
        return [m.key for m in self.metrics if m.average == "categories"]

    def reward_names(self) -> list[str]:
        return list(dict.fromkeys([*self.rewards, *(m.reward for m in self.metrics)]))

    def load_prompts(self, split: str, source: str | Path | None = None) -> list[Prompt]:
        """The prompts of a split: read from its file (``source``: where a remote file was fetched to) or
        generated (built-in prompt sets)."""
        if split not in SPLITS:
            raise ConfigError(f"task {self.name!r}: unknown split {split!r}; expected one of {list(SPLITS)}")
        file = self.prompt_files.get(split)
        if file is None and source is None:
            return list(resolve_callable(self.generator, f"task {self.name!r} generator")(split))
        if source is None and isinstance(file, RemoteFile):
            raise ConfigError(f"task {self.name!r}: the {split} prompts are {file.url}: fetch them first "
                              "(the fetch_data rule, or `python -m tafs fetch-data`) and pass the file")
        prompts = read_prompt_file(source if source is not None else file)
        key = self.category_key
        return [p if p.category is not None or key not in p.metadata else replace(p, category=str(p.metadata[key]))
                for p in prompts] if key else prompts

    def local_files(self) -> dict[str, str]:
        """split -> a prompt file on this machine now (checked when the DAG is built)."""
        return {k: v for k, v in self.prompt_files.items() if isinstance(v, str)}

    def remote_files(self) -> dict[str, RemoteFile]:
        """split -> a prompt file the fetch_data rule downloads."""
        return {k: v for k, v in self.prompt_files.items() if isinstance(v, RemoteFile)}

    def manifest(self) -> dict[str, Any]:
        """What the tables and figures need to know about the task (written into manifest.json)."""
        return {
            "name": self.name,
            "categories": list(self.categories),
            "category_metric": self.category_metric,
            "category_label": self.category_label,
            "caption_prefix": self.caption_prefix,
            "metrics": {m.key: {"reward": m.reward, "domain": m.domain, "label": m.label, "percent": m.percent}
                        for m in self.metrics},
        }


def resolve_callable(ref: str, where: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function (imported now)."""
    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise ConfigError(f"{where}: expected 'package.module:function', got {ref!r}")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{where}: cannot import {ref!r} ({e})") from e


def user_task(name: str, entry: Mapping[str, Any], where: str, base: TaskSpec | None = None) -> TaskSpec:
    """A task defined in config ``tasks.<name>``: prompt files of the user's, rewards and metrics by name; with
    ``extends: <built-in task>`` (``base``) every key not given is the built-in task's (e.g. local copies of
    its prompt files on a machine without network)."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a mapping with prompts, rewards and metrics")
    files = _user_files(entry.get("prompts"), where, partial=base is not None)
    if base is not None:
        return _extended(base, name, entry, files, where)
    rewards = _user_rewards(entry.get("rewards"), where)
    train = files["train"]
    return TaskSpec(name=name, description=str(entry.get("description", f"user task ({getattr(train, 'url', train)})")),
                    rewards=rewards, metrics=_user_metrics(entry.get("metrics"), rewards, f"{where}.metrics"),
                    prompt_files=files, categories=tuple(entry.get("categories") or ()),
                    category_metric=entry.get("category_metric"), category_key=entry.get("category_key"))


def _user_files(files: Any, where: str, partial: bool) -> dict[str, str | RemoteFile]:
    ok = isinstance(files, Mapping) and (set(files) <= set(SPLITS) if partial else set(files) == set(SPLITS))
    if files is None and partial:
        return {}
    if not ok:
        raise ConfigError(f"{where}.prompts: name a prompt file (JSONL or .txt) for each split {list(SPLITS)}, "
                          f"e.g. {{train: data/train.jsonl, test: {{url: https://..., sha256: ...}}}}; got {files!r}")
    return {k: v if isinstance(v, str) else parse_remote(v, f"{where}.prompts.{k}") for k, v in files.items()}


def _user_rewards(raw: Any, where: str) -> dict[str, float]:
    from tafs.rewards import registry

    rewards = dict(raw or {})
    if not rewards:
        raise ConfigError(f"{where}.rewards: name at least one training reward, e.g. {{toy_dense: 1.0}}")
    registry.check_names(rewards, f"{where}.rewards")
    return rewards


def _extended(base: TaskSpec, name: str, entry: Mapping[str, Any], files: Mapping, where: str) -> TaskSpec:
    """``base`` with the keys the entry gives replaced."""
    changes: dict[str, Any] = {"name": name, "prompt_files": {**base.prompt_files, **files}}
    if "rewards" in entry:
        changes["rewards"] = _user_rewards(entry["rewards"], where)
    if "metrics" in entry:
        changes["metrics"] = _user_metrics(entry["metrics"], changes.get("rewards", base.rewards), f"{where}.metrics")
    for key in ("description", "category_metric", "category_key"):
        if key in entry:
            changes[key] = entry[key]
    if "categories" in entry:
        changes["categories"] = tuple(entry["categories"] or ())
    return replace(base, **changes)


def _user_metrics(raw: Any, rewards: Mapping[str, float], where: str) -> tuple[MetricSpec, ...]:
    """Metrics as configured; by default every training reward, in-domain, under its own name."""
    from tafs.rewards import registry

    if not raw:
        raw = {r: {"reward": r, "domain": "in"} for r in rewards}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping metric -> {{reward, domain, label?, percent?}}")
    out = []
    for key, m in raw.items():
        m = dict(m or {})
        reward = m.get("reward", key)
        registry.check_names([reward], f"{where}.{key}.reward")
        spec = registry.spec(reward)
        out.append(MetricSpec(key, reward, m.get("domain", "in"), m.get("label", spec.label),
                              bool(m.get("percent", spec.percent)), m.get("average", "images")))
    return tuple(out)


def check_prompt_files(task: TaskSpec) -> dict[str, list[Prompt]]:
    """Read and check a user task's prompt files (before any job runs): readable, non-empty, the metadata
    every reward of the task needs. Returns the prompts per split."""
    from tafs.prompts import check_metadata
    from tafs.rewards import registry

    out = {}
    for split, path in task.local_files().items():
        prompts = read_prompt_file(Path(path))
        names = task.rewards if split == "train" else [m.reward for m in task.metrics]
        check_metadata(prompts, {n: registry.spec(n).needs for n in names}, str(path))
        out[split] = prompts
    return out


