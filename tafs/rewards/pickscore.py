"""PickScore (Kirstain et al. 2023): a CLIP-H fine-tuned on Pick-a-Pic human preferences.

Score = ``model.logit_scale.exp()`` x cosine(image embedding, text embedding), as the model card computes
it (~21-24 for good SD3/Flux images), optionally divided by ``scale``: Flow-GRPO trains on PickScore / 26
(set ``scale: 26`` to train on its scale; tables use the raw score, ``scale: 1``).

The model is a plain transformers ``CLIPModel`` (``AutoModel`` of ``yuvalkirstain/PickScore_v1``), so this
reuses ``clip_score``'s scorer: torch preprocessing from the image processor's settings (224 px bicubic
short-side resize, centre crop, CLIP mean/std), text truncated to 77 tokens, text embeddings cached per
prompt. The model card takes its tokenizer and image processor from
``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``; a model folder that ships its own processor files uses those.
"""

from __future__ import annotations

from pathlib import Path

from tafs.rewards import runtime
from tafs.rewards.base import RewardSpec
from tafs.rewards.clip_score import ScaledScorer, resident_scorer

DEFAULT_MODEL = "yuvalkirstain/PickScore_v1"
DEFAULT_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
PROCESSOR_FILE = "preprocessor_config.json"


def _has_processor(path: str) -> bool:
    """Whether the model folder or hub repository ships its own image processor config."""
    p = Path(path)
    if p.exists():
        return (p / PROCESSOR_FILE).is_file()
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        hf_hub_download(path, PROCESSOR_FILE)  # tiny; from the cache when offline
    except EntryNotFoundError:  # not in the repo, or offline and not cached
        return False
    return True


def processor_source(path: str, processor: str | None = None) -> str:
    """The tokenizer/image processor to use: ``processor`` if given, else the model's own when it has one,
    else the model card's ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``."""
    if processor is not None:
        return str(processor)
    return str(path) if _has_processor(path) else DEFAULT_PROCESSOR


def pickscore(path: str = DEFAULT_MODEL, processor: str | None = None, device: str = "auto", dtype: str = "fp32",
              batch_size: int = 64, scale: float = 1.0) -> ScaledScorer:
    """PickScore of the model at ``path`` (folder in the hub layout or hub id), divided by ``scale``."""
    if not scale:
        raise ValueError("pickscore reward: scale is a divisor and must not be 0")
    path = runtime.check_source(path, "pickscore")
    scorer = resident_scorer(path, "pickscore", processor_source(path, processor), device=device, dtype=dtype,
                             batch_size=batch_size, auto_model=True)
    logit_scale = float(scorer.model.logit_scale.detach().float().exp())
    return ScaledScorer(scorer, logit_scale / float(scale))


REWARDS = {
    "pickscore": RewardSpec("pickscore", pickscore, "PickScore", "PickScore: logit_scale.exp() x cosine of a "
                            "CLIP-H fine-tuned on Pick-a-Pic preferences (transformers CLIPModel), divided by "
                            "reward_models.pickscore.scale (Flow-GRPO trains on /26)",
                            scale="logit_scale.exp() x cosine, ~21-24 (Flow-GRPO: / 26)", source=DEFAULT_MODEL),
}
