"""Parameter counts of the real models, from their configs, without weights.

Each component (a transformer, a text encoder, a VAE, a reward model's network) has a small JSON in
``tafs/planning/configs/``: the values of its public ``config.json`` (``source`` names the hub repository and
file), the diffusers / transformers class that builds it. When the download cache (config ``hub.cache``, folders
``<owner>--<name>@<revision>/``) holds the real file, that is read instead. The class is instantiated on the meta
device (``accelerate.init_empty_weights``: shapes, no memory) and its parameters counted, so a count follows the
architecture, never a number typed in.
"""

from __future__ import annotations

import functools
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).with_name("configs")


@dataclass(frozen=True)
class Component:
    """One network: its shipped spec name, the config used, and where that config came from."""

    name: str
    cls: str
    config: dict[str, Any]
    source: str  # "shipped: <repo> <file>" or the cached file's path


def shipped(name: str) -> dict[str, Any]:
    path = CONFIGS / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"no shipped model config {name!r} ({CONFIGS})")
    return json.loads(path.read_text(encoding="utf-8"))


def cached_config(source: str, cache: str | Path | None) -> Path | None:
    """The real ``config.json`` of ``source`` ("owner/name path/in/repo ...") in the download cache, if there."""
    if not cache or not Path(cache).is_dir():
        return None
    repo, _, rest = source.partition(" ")
    file = rest.split(" ")[0] if rest else ""
    if "/" not in repo or not file.endswith(".json"):
        return None
    owner, name = repo.split("/", 1)
    for folder in sorted(Path(cache).glob(f"{owner}--{name}@*")):
        if (folder / file).is_file():
            return folder / file
    return None


def component(name: str, cache: str | Path | None = None) -> Component:
    """The spec of component ``name``, its config replaced by the cached real one when present."""
    spec = shipped(name)
    real = cached_config(spec["source"], cache)
    if real is None:
        return Component(name, spec["class"], spec["config"], f"shipped ({spec['source']})")
    config = json.loads(real.read_text(encoding="utf-8"))
    if spec["class"].startswith("transformers.") and "model_type" not in config:
        config["model_type"] = spec["config"].get("model_type")
    return Component(name, spec["class"], config, str(real))


def meta_model(comp: Component) -> Any:
    """The component's module on the meta device (no weights allocated)."""
    import torch
    from accelerate import init_empty_weights

    package, _, cls_name = comp.cls.partition(".")
    cls = getattr(importlib.import_module(package), cls_name)
    cfg = {k: v for k, v in comp.config.items() if not k.startswith("_")}
    with init_empty_weights(), torch.device("meta"):
        if package == "diffusers":
            return cls.from_config(cfg)
        from transformers import AutoConfig

        kind = cfg.pop("model_type")
        model = cls(AutoConfig.for_model(kind, **cfg))
    model.tie_weights()  # shared embeddings (T5's) one tensor, as loaded (inside the context it is a no-op)
    return model


@functools.cache
def parameter_count(name: str, cache: str | None = None) -> int:
    """Parameters and persistent buffers of component ``name`` (real config when cached), counted on the meta
    device. Buffers count because they sit in memory at the model's precision too: SD3's 384 x 384 positional
    table is 0.23 B of the SD3.5-M transformer's 2.47 B (the safetensors file's size in bf16, 4.9 GB)."""
    model = meta_model(component(name, cache))
    return sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())


def lora_parameter_count(name: str, targets: tuple[str, ...], rank: int, cache: str | None = None) -> int:
    """Parameters of a rank-``rank`` LoRA on every ``nn.Linear`` whose name ends with one of ``targets`` (peft's
    matching, as ``tafs.models.lora.attach_lora``): rank x (in + out) each."""
    import torch

    model = meta_model(component(name, cache))
    total = 0
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and any(module_name == t or module_name.endswith("." + t)
                                                        for t in targets):
            total += rank * (module.in_features + module.out_features)
    return total
