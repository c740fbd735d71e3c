"""What every reward model shares: where it runs, in which precision, loaded once per process, and a clear
error when its package or its files are missing.

Config ``reward_models.<name>`` passes ``device`` (``auto``: the accelerator of the calling process, i.e.
``cuda:<LOCAL_RANK>`` under ``accelerate launch``, else the CPU), ``dtype`` (fp32 | bf16 | fp16) and
``batch_size`` to every reward factory; these helpers turn them into torch objects.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from tafs.hub import REPO_ID

T = TypeVar("T")

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}
_RESIDENT: dict[tuple, Any] = {}


class MissingDependency(ImportError):
    """A reward's optional package is not installed; the message says which and how to get it."""


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None: the GPU of this process (LOCAL_RANK under accelerate/torchrun) when there is one."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        return torch.device("cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """fp32 on the CPU whatever is asked (half-precision matmuls are slow or missing there)."""
    if dtype is None or device.type == "cpu":
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def require(module: str, package: str, reward: str) -> Any:
    """Import ``module`` or say which package the reward needs and the command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependency(f"{reward} reward: needs the Python package {package!r} ({e}); install it with "
                                f"`pip install {package}` (or `pip install -e .[rewards]`)") from e


def check_source(path: str | os.PathLike | None, reward: str) -> str:
    """A local folder or file that exists, or a string that can be a hub id; otherwise a clear error."""
    if path is None:
        raise FileNotFoundError(f"{reward} reward: no model given: set reward_models.{reward}.path to a folder "
                                "or {hub: owner/name}")
    p = Path(path)
    if p.exists():
        return str(p)
    if p.is_absolute() or str(path).startswith(".") or not REPO_ID.match(str(path)):
        raise FileNotFoundError(f"{reward} reward: no model at {str(path)!r} (and not a hub id); set "
                                f"reward_models.{reward}.path to a model folder or {{hub: owner/name}}")
    return str(path)


def resident(key: tuple, load: Callable[[], T]) -> T:
    """Load once per process: rewards that share a model (GenEval's strict and partial scores, a metric that
    is also a training reward) share one copy, and a trainer never reloads it between iterations."""
    if key not in _RESIDENT:
        _RESIDENT[key] = load()
    return _RESIDENT[key]


def clear_resident() -> None:
    _RESIDENT.clear()


def batches(n: int, size: int):
    """Index slices of ``size`` over ``n`` items."""
    for i in range(0, n, max(1, size)):
        yield slice(i, min(n, i + size))
