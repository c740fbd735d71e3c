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
from tafs.hub import HubModel, local_path, parse_model
from tafs.paths import Layout

TINY_FAMILIES = ("sd3", "flux")


@dataclass(frozen=True)
class Tiny:
    family: str


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
        self.rewards: dict[str, str | HubModel | None] = {}
        for name, kwargs in (config.get("reward_models") or {}).items():
            if "path" in kwargs:
                p = kwargs["path"]
                self.rewards[name] = None if not p else parse_model(p, f"reward_models.{name}.path")

    def downloads(self) -> dict[str, HubModel]:
        """Every hub model, by its folder name under the cache."""
        found = [self.base, *(m for pair in self.baselines.values() for m in pair), *self.components.values(),
                 *self.rewards.values()]
        return {m.name: m for m in found if isinstance(m, HubModel)}

    def path(self, model: str | HubModel) -> str:
        return str(local_path(model, self.cache))

    def base_path(self) -> str:
        """A local folder, a download, or the base the DAG builds (toy pretraining or a tiny pipeline)."""
        if self.base is None or isinstance(self.base, Tiny):
            return str(self.layout.base_model)
        return self.path(self.base)

    def reward_path(self, name: str) -> str | None:
        """Where a reward model's files are (the DAG-trained toy scorer for `path: null`); None: not a path."""
        if name not in self.rewards:
            return None
        model = self.rewards[name]
        return str(self.layout.scorer_model) if model is None else self.path(model)

    def built_by_dag(self, name: str) -> bool:
        """Whether a reward model's folder is made by this DAG (a training or a download rule)."""
        return name in self.rewards and not isinstance(self.rewards[name], str)
