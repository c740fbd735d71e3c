"""Where every model the config names comes from, and where the jobs find it.

A model is a local folder (a string), a hub model (``{hub: owner/name, revision: ...}``, fetched once by the
``download`` rule into ``hub.cache``), for the base model also ``null`` (the base the task builds: a
``BuiltModel`` of the task that provides "base") or ``{tiny: sd3 | flux}`` (a tiny random pipeline the DAG builds: CPU
smoke runs of the real code path), and for a reward model ``path: null`` (the model the task builds for that reward,
``provides: reward:<name>``); a baseline's ``{base: true}`` is this config's base model, sampled through its own
pipeline. Checked when the DAG is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from tafs.config import ConfigError
from tafs.hub import HubModel, check_pins, local_path, parse_model
from tafs.paths import Layout
from tafs.tasks.base import BuiltModel

TINY_FAMILIES = ("sd3", "flux")


@dataclass(frozen=True)
class Tiny:
    family: str


@dataclass(frozen=True)
class TinyReward:
    """A tiny random reward model the DAG builds (tafs.rewards.tiny): CPU smoke runs of the real loaders."""

    name: str


_NOT_A_MODEL = object()  # a reward kwarg that is an option, not a model the DAG provides


def parse_reward_model(reward: str, key: str, value: Any) -> Any:
    """A reward kwarg that names a model the DAG provides: `path: null` (the task builds it), `{hub: ...}` or
    `{tiny: name}`. Strings stay as they are (a local folder or a hub id the reward itself resolves)."""
    where = f"reward_models.{reward}.{key}"
    if key == "path" and not value:
        return None
    if not isinstance(value, Mapping):
        return _NOT_A_MODEL
    if "tiny" in value:
        from tafs.rewards.tiny import names

        if set(value) != {"tiny"} or value["tiny"] not in names():
            raise ConfigError(f"{where}: {{tiny: name}} takes one of {names()}, got {value!r}")
        return TinyReward(value["tiny"])
    if "hub" in value:
        return parse_model(value, where)
    return _NOT_A_MODEL


Source = str | HubModel | Tiny | None


def parse_base(value: Any) -> Source:
    if value is None:
        return None
    if isinstance(value, Mapping) and "tiny" in value:
        if set(value) != {"tiny"} or value["tiny"] not in TINY_FAMILIES:
            raise ConfigError(f"model.pretrained: {{tiny: family}} takes one of {list(TINY_FAMILIES)}, got {value!r}")
        return Tiny(value["tiny"])
    return parse_model(value, "model.pretrained")


def check_folder(path: str, where: str) -> None:
    """A local model folder must be a hub-layout folder the loader knows (read now, before any job)."""
    from tafs.models.loading import pipeline_class

    try:
        pipeline_class(path)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


class Sources:
    """Every model of the config: the base, the baselines (and their LoRAs), the reward models."""

    def __init__(self, config: Mapping[str, Any], layout: Layout, builds: Sequence[BuiltModel] = (),
                 task: str = "the task"):
        self.layout = layout
        self.builds = {b.provides: b for b in builds}
        self.task = task
        self.cache = Path((config.get("hub") or {}).get("cache", "downloads"))
        self.base = parse_base(config["model"].get("pretrained"))
        if self.base is None and "base" not in self.builds:
            raise ConfigError(f"model.pretrained: null asks {task} to build its base model, and it builds none: name a "
                              "model folder, {hub: owner/name, revision: ...} or {tiny: sd3 | flux}")
        if isinstance(self.base, str):
            check_folder(self.base, "model.pretrained")
        self.baselines: dict[str, tuple[str | HubModel, str | HubModel | None]] = {}
        self.components: dict[tuple[str, str], str | HubModel] = {}  # (baseline, component) -> model
        for name, entry in (config.get("baselines") or {}).items():
            lora = (entry.get("lora") or {}).get("model")
            model = entry.get("model")
            model = self.base_path() if model == {"base": True} else parse_model(model, f"baselines.{name}.model")
            self.baselines[name] = (model,
                                    parse_model(lora, f"baselines.{name}.lora.model") if lora is not None else None)
            for comp, spec in (entry.get("components") or {}).items():
                self.components[(name, comp)] = parse_model(spec.get("model"), f"baselines.{name}.components.{comp}")
        # (reward, kwarg) -> a model the DAG provides: None (`path: null`, the task builds it), a download, a tiny model
        self.reward_models: dict[tuple[str, str], HubModel | TinyReward | None] = {}
        for name, kwargs in (config.get("reward_models") or {}).items():
            for key, value in (kwargs or {}).items():
                model = parse_reward_model(name, key, value)
                if model is not _NOT_A_MODEL:
                    self.reward_models[(name, key)] = model
        check_pins(self.hub_models())

    def hub_models(self) -> list[tuple[str, HubModel]]:
        """Every hub model with the config key that names it, in config order."""
        named = [("model.pretrained", self.base)]
        for name, (model, lora) in self.baselines.items():
            named += [(f"baselines.{name}.model", model), (f"baselines.{name}.lora.model", lora)]
        named += [(f"baselines.{b}.components.{c}.model", m) for (b, c), m in self.components.items()]
        named += [(f"reward_models.{r}.{k}", m) for (r, k), m in self.reward_models.items()]
        return [(where, m) for where, m in named if isinstance(m, HubModel)]

    def downloads(self) -> dict[str, HubModel]:
        """Every hub model, by its folder name under the cache."""
        return {m.name: m for _, m in self.hub_models()}

    def path(self, model: str | HubModel) -> str:
        return str(local_path(model, self.cache))

    def base_path(self) -> str:
        """A local folder, a download, or the base the DAG builds (the task's built base or a tiny pipeline)."""
        if self.base is None:
            return str(self.layout.built_model(self.builds["base"].name))
        if isinstance(self.base, Tiny):
            return str(self.layout.base_model)
        return self.path(self.base)

    def reward_model_path(self, model: HubModel | TinyReward | None, reward: str) -> str:
        """Where a job finds a reward model the DAG provides (for ``reward``)."""
        if model is None:
            return str(self.layout.built_model(self.builds[f"reward:{reward}"].name))
        if isinstance(model, TinyReward):
            from tafs.rewards.tiny import model_folder

            return str(model_folder(model.name, self.layout.tiny_reward(model.name)))
        return self.path(model)

    def reward_kwargs(self, name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """A reward's factory kwargs with every model the DAG provides replaced by its folder."""
        return {k: self.reward_model_path(self.reward_models[(name, k)], name) if self._provided(name, k) else v
                for k, v in kwargs.items()}

    def _provided(self, reward: str, key: str) -> bool:
        """The DAG provides this kwarg's model (a null the task cannot build stays null: no job reads it)."""
        model = self.reward_models.get((reward, key), _NOT_A_MODEL)
        return model is not _NOT_A_MODEL and (model is not None or f"reward:{reward}" in self.builds)

    def reward_outputs(self, name: str) -> list[str]:
        """The folders the DAG makes (built by the task, downloads, tiny models) that reward ``name`` reads."""
        return [str(self.layout.tiny_reward(m.name)) if isinstance(m, TinyReward) else self.reward_model_path(m, name)
                for (reward, key), m in self.reward_models.items() if reward == name and self._provided(reward, key)]

    def tiny_rewards(self) -> list[str]:
        return sorted({m.name for m in self.reward_models.values() if isinstance(m, TinyReward)})

    def check_buildable(self, used: Sequence[str]) -> None:
        """Every reward model set to null that a job reads (``used``: the rewards trained on or scored) is one the
        task builds."""
        for (name, key), m in self.reward_models.items():
            if m is None and name in used and f"reward:{name}" not in self.builds:
                raise ConfigError(f"reward_models.{name}.{key}: null asks {self.task} to build this reward's model, "
                                  f"and it builds none for {name!r}: give a folder or a hub id")

    def built_models(self, used: Sequence[str]) -> dict[str, BuiltModel]:
        """The models the task builds for this config, by folder name: its base (``model.pretrained: null``) and
        the reward models set to null that a job reads (``used``)."""
        needed = (["base"] if self.base is None else []) + [f"reward:{r}" for (r, _), m in self.reward_models.items()
                                                             if m is None and r in used]
        return {self.builds[p].name: self.builds[p] for p in dict.fromkeys(needed) if p in self.builds}
