"""Spec -> image: objects are 8x8 templates placed in the cells of a 4x4 slot grid (32x32 px).

The grid and the coarse shapes keep the world learnable by a tiny model on a CPU in minutes,
while layouts (which cells, which unspecified colours) stay random, so the model must still
place, count, colour and relate objects.
"""

from __future__ import annotations

import numpy as np
import torch

from tafs.toyworld.prompts import COLORS, SHAPES, PromptSpec

CELL = 8
GRID = 4
IMAGE_SIZE = CELL * GRID

PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
}
BACKGROUND = (0.0, 0.0, 0.0)


def _templates() -> dict[str, np.ndarray]:
    r, c = np.mgrid[0:CELL, 0:CELL]
    square = (r >= 1) & (r <= 6) & (c >= 1) & (c <= 6)
    ring = ~((r >= 2) & (r <= 5) & (c >= 2) & (c <= 5))
    cross = ((r >= 3) & (r <= 4)) | ((c >= 3) & (c <= 4))
    triangle = (c <= r) & (r >= 1) & (c <= 6)
    return {"square": square, "ring": ring, "cross": cross, "triangle": triangle}


TEMPLATES: dict[str, np.ndarray] = _templates()


def relation_holds(relation: str, cell_a: int, cell_b: int) -> bool:
    ra, ca = divmod(cell_a, GRID)
    rb, cb = divmod(cell_b, GRID)
    return {"left of": ca < cb, "right of": ca > cb, "above": ra < rb, "below": ra > rb}[relation]


def sample_layout(spec: PromptSpec, rng: np.random.Generator) -> list[tuple[int, str, str]]:
    """Random (cell, shape, colour) per object, satisfying the spec's relation."""
    n = len(spec.objects)
    while True:
        cells = rng.choice(GRID * GRID, size=n, replace=False).tolist()
        if spec.relation is None or relation_holds(spec.relation, cells[0], cells[1]):
            break
    return [(cell, o.shape, o.color or COLORS[rng.integers(len(COLORS))]) for cell, o in zip(cells, spec.objects)]


def draw(layout: list[tuple[int, str, str]]) -> np.ndarray:
    """Layout -> float32 image (3, H, W) in [0, 1]."""
    img = np.zeros((3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    img[:] = np.asarray(BACKGROUND, dtype=np.float32)[:, None, None]
    for cell, shape, color in layout:
        r, c = divmod(cell, GRID)
        sl = (slice(None), slice(r * CELL, (r + 1) * CELL), slice(c * CELL, (c + 1) * CELL))
        patch = img[sl]
        mask = TEMPLATES[shape]
        for ch, val in enumerate(PALETTE[color]):
            patch[ch][mask] = val
    return img


def render(specs: list[PromptSpec], rng: np.random.Generator) -> torch.Tensor:
    """A batch of ground-truth images (B, 3, 32, 32) in [0, 1]."""
    return torch.from_numpy(np.stack([draw(sample_layout(s, rng)) for s in specs]))


assert set(TEMPLATES) == set(SHAPES)
