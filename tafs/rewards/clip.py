"""The ``clip`` reward: its spec and factory; the scorer itself is ``tafs.rewards.clip_score``.

Kept apart from the scorer so that reading the spec (``tafs grid``, the DAG's grid_manifest job) does not import
torch: the scorer module loads when the reward is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tafs.rewards.base import RewardSpec

if TYPE_CHECKING:
    from tafs.rewards.clip_score import ScaledScorer

DEFAULT_CLIP = "openai/clip-vit-large-patch14"


def clip(path: str = DEFAULT_CLIP, device: str = "auto", dtype: str = "fp32", batch_size: int = 64,
         scale: float = 100.0) -> ScaledScorer:
    """CLIP score: ``scale`` x cosine of a ``CLIPModel`` at ``path`` (local folder or hub id).

    ``scale`` 100 is the paper's CLIP score (~26-30); the toy world uses 1 (its scorer's plain cosine).
    """
    from tafs.rewards.clip_score import ScaledScorer, load_clip

    return ScaledScorer(load_clip(path, device=device, batch_size=batch_size, dtype=dtype), scale)


REWARDS = {
    "clip": RewardSpec("clip", clip, "CLIP score", "scale x cosine similarity of a transformers CLIPModel's "
                       "image and text embeddings (reward_models.clip.path: a folder in the hub layout or a hub "
                       "id; scale 100 by default, the toy world uses 1)",
                       scale="100 x cosine, ~26-30 (scale kwarg)", source=DEFAULT_CLIP),
}
