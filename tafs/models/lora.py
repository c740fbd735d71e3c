"""LoRA through peft on a denoiser module: attach, load. The adapter is the only thing RL trains.

Works on modules, not backbones, so the backbone interface can use it without an import cycle.

A target is a module-name suffix matched at a dot boundary, as peft matches a list of ``target_modules``:
``to_q`` adapts every ``*.to_q``, ``attn.to_q`` only those of an ``attn`` submodule (so not SD3.5-M's second,
``attn2``, attention of its dual-attention blocks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

# The attention projections of an MMDiT block (SD3 and Flux; docs/real-models.md §1).
ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
# peft's ``init_lora_weights``: "default" = Kaiming-uniform A, B = 0; "gaussian" = A ~ N(0, 1/r), B = 0 (flow_grpo)
LORA_INITS = ("default", "gaussian")


def check_init(init: str) -> None:
    if init not in LORA_INITS:
        raise ValueError(f"LoRA init must be one of {LORA_INITS}, got {init!r}")


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 32
    alpha: int = 64
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ATTENTION_TARGETS
    init: str = "default"  # one of LORA_INITS

    def __post_init__(self) -> None:
        check_init(self.init)


def matches(name: str, target: str) -> bool:
    """Whether module ``name`` is selected by ``target`` (peft's rule for a list of target_modules)."""
    return name == target or name.endswith("." + target)


def attach_lora(module: torch.nn.Module, spec: LoraSpec, seed: int | None = None) -> torch.nn.Module:
    """``module`` wrapped in a fresh peft LoRA adapter (base weights frozen); targets absent from it are skipped."""
    from peft import LoraConfig, get_peft_model

    names = [n for n, _ in module.named_modules()]
    targets = [t for t in spec.target_modules if any(matches(n, t) for n in names)]
    if not targets:
        raise ValueError(f"none of the LoRA target_modules {spec.target_modules} exist in {type(module).__name__}")
    init = True if spec.init == "default" else spec.init
    cfg = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets,
                     init_lora_weights=init)
    if seed is not None:
        torch.manual_seed(seed)
    return get_peft_model(module, cfg)


def load_lora(module: torch.nn.Module, path: str | Path, trainable: bool = False) -> torch.nn.Module:
    """``module`` with the peft adapter saved at ``path``."""
    from peft import PeftModel

    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{path}: not a LoRA adapter folder (no adapter_config.json); "
                                "expected the adapter/ folder a training run writes")
    try:
        return PeftModel.from_pretrained(module, str(path), is_trainable=trainable)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign weights file: name it and say what to do
        files = ", ".join(sorted(p.name for p in path.glob("adapter_model.*"))) or "no adapter_model.* file"
        raise ValueError(f"{path}: cannot load this LoRA adapter ({files}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200] if str(e) else ''}); re-run the training job that wrote it") \
            from e
