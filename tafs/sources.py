"""Where every model the config names comes from, and where the jobs find it.

A model is a local folder (a string), a hub model (``{hub: owner/name, revision: ...}``, fetched once by the
``download`` rule into ``hub.cache``), for the base model also ``null`` (the toy base the DAG pretrains) or
``{tiny: sd3 | flux}`` (a tiny random pipeline the DAG builds: CPU smoke runs of the real code path), and for
a reward model ``path: null`` (the toy world's learned scorer, trained by the DAG); a baseline's ``{base: true}`` is
this config's base model, sampled through its own pipeline. Checked when the DAG is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from tafs.config import ConfigError
from tafs.hub import HubModel, check_pins, local_path, parse_model
from tafs.paths import Layout

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
    """A reward kwarg that names a model the DAG provides: `path: null` (the toy scorer), `{hub: ...}` or
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

    def __init__(self, config: Mapping[str, Any], layout: Layout):
        self.layout = layout
        self.cache = Path((config.get("hub") or {}).get("cache", "downloads"))
        self.base = parse_base(config["model"].get("pretrained"))
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
        # (reward, kwarg) -> a model the DAG provides: None (`path: null`, the toy scorer), a download, a tiny model
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
        """A local folder, a download, or the base the DAG builds (toy pretraining or a tiny pipeline)."""
        if self.base is None or isinstance(self.base, Tiny):
            return str(self.layout.base_model)
        return self.path(self.base)

    def reward_model_path(self, model: HubModel | TinyReward | None) -> str:
        """Where a job finds a reward model the DAG provides."""
        if model is None:
            return str(self.layout.scorer_model)
        if isinstance(model, TinyReward):
            from tafs.rewards.tiny import model_folder

            return str(model_folder(model.name, self.layout.tiny_reward(model.name)))
        return self.path(model)

    def reward_kwargs(self, name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """A reward's factory kwargs with every model the DAG provides replaced by its folder."""
        return {k: self.reward_model_path(self.reward_models[(name, k)]) if (name, k) in self.reward_models else v
                for k, v in kwargs.items()}

    def reward_outputs(self, name: str) -> list[str]:
        """The folders the DAG makes (toy scorer, downloads, tiny models) that reward ``name`` reads."""
        return [str(self.layout.tiny_reward(m.name)) if isinstance(m, TinyReward) else self.reward_model_path(m)
                for (reward, _), m in self.reward_models.items() if reward == name]

    def tiny_rewards(self) -> list[str]:
        return sorted({m.name for m in self.reward_models.values() if isinstance(m, TinyReward)})

    def uses_toy_scorer(self) -> bool:
        return any(m is None for m in self.reward_models.values())
