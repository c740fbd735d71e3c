"""Per-sample noise that does not depend on how a batch is split over processes.

With N training processes each one holds a contiguous slice of the global batch (tafs.train.shard). Every
sampler draws its noise through :func:`batch_randn`: inside :func:`sharded` it draws the noise of the whole
global batch from the (shared) generator and keeps its own rows, so sample i sees the same noise whatever N is,
and every process's generator advances identically. Outside it (one process, evaluation) it is a plain draw.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

import torch

_SHARD: ContextVar[tuple[int, int, int] | None] = ContextVar("tafs_noise_shard", default=None)


@contextmanager
def sharded(start: int, stop: int, total: int) -> Iterator[None]:
    """Within the block, batch noise is drawn for ``total`` rows and rows ``start:stop`` are returned."""
    if not 0 <= start <= stop <= total:
        raise ValueError(f"bad shard {start}:{stop} of {total}")
    token = _SHARD.set((start, stop, total))
    try:
        yield
    finally:
        _SHARD.reset(token)


def batch_randn(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None,
                device: torch.device | str | None, dtype: torch.dtype) -> torch.Tensor:
    """Standard normal noise of ``shape`` (rows = samples of this process's batch)."""
    shard = _SHARD.get()
    if shard is None:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    start, stop, total = shard
    if shape[0] != stop - start:
        raise ValueError(f"batch noise of {shape[0]} rows inside a shard of {stop - start} rows: draw it outside "
                         "`sharded` or per sample")
    return torch.randn((total, *shape[1:]), generator=generator, device=device, dtype=dtype)[start:stop]


def batch_rand(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None,
               device: torch.device | str | None = None) -> torch.Tensor:
    """Uniform [0, 1) float32 values of ``shape`` (rows = samples), drawn for the global batch inside
    :func:`sharded` like :func:`batch_randn` (DanceGRPO's per-sample step subsets, tafs.train.samplers.dance_sde)."""
    shard = _SHARD.get()
    if shard is None:
        return torch.rand(shape, generator=generator, device=device)
    start, stop, total = shard
    if shape[0] != stop - start:
        raise ValueError(f"batch draw of {shape[0]} rows inside a shard of {stop - start} rows")
    return torch.rand((total, *shape[1:]), generator=generator, device=device)[start:stop]


def initial_noise(n_prompts: int, group_size: int, shape: tuple[int, ...], generator: torch.Generator | None,
                  same_in_group: bool = False) -> torch.Tensor:
    """The starting noise of all ``n_prompts`` x ``group_size`` samples of an iteration (rows group-major), drawn
    in one call: every process draws all of it and keeps its rows, so a sample's noise does not depend on the
    number of processes. ``same_in_group`` (``method.same_init_noise``): every sample of a group starts from the
    group's first row. The same tensor is drawn either way, so the generator ends in the same state."""
    noise = torch.randn((n_prompts * group_size, *shape), generator=generator)
    if same_in_group:
        noise = noise[::group_size].repeat_interleave(group_size, 0)
    return noise
