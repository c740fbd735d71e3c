"""Seeds and per-step random generators.

Every stochastic draw of a training step comes from a generator seeded by (seed, step), so a run
resumed from a checkpoint draws exactly what an uninterrupted run draws.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_generators(seed: int, step: int, stream: int = 0,
                    device: str | torch.device = "cpu") -> tuple[np.random.Generator, torch.Generator]:
    """Independent (numpy, torch) generators for one step of one stream."""
    rng = np.random.default_rng([seed, step, stream])
    gen = torch.Generator(device=device)
    gen.manual_seed(int(rng.integers(2**62)))
    return rng, gen
