"""Text embeddings computed once per prompt and kept off the accelerator.

SD3's conditioning is ~333 tokens x 4096 per prompt: 25 k training prompts cached on a GPU would not
fit. The cache holds each prompt's ``Cond`` on ``store`` (the CPU by default) and moves only the batch in
use to the backbone's device. ``max_prompts`` bounds it (least recently used go first; 0 = no cache, every
batch is encoded), for prompt sets whose embeddings would not fit in host memory either.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from tafs.models.backbone import Backbone, Cond


class TextEmbeddingCache:
    def __init__(self, backbone: Backbone, store: str | torch.device = "cpu", max_batch: int = 64,
                 max_prompts: int | None = None):
        if max_prompts is not None and max_prompts < 0:
            raise ValueError(f"train.text_cache must be >= 0 or null, got {max_prompts}")
        self.backbone = backbone
        self.store = torch.device(store)
        self.max_batch = max_batch
        self.max_prompts = max_prompts
        self._cache: OrderedDict[str, Cond] = OrderedDict()

    def __len__(self) -> int:
        return len(self._cache)

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> Cond:
        """The conditioning of ``texts`` (repeats allowed) on the backbone's device.

        Prompts not cached are encoded together, sorted, in batches of at most ``max_batch``.
        """
        found: dict[str, Cond] = {}
        for t in texts:
            if t in self._cache:
                self._cache.move_to_end(t)
                found[t] = self._cache[t]
        missing = sorted({t for t in texts if t not in found})
        for start in range(0, len(missing), self.max_batch):
            chunk = missing[start:start + self.max_batch]
            enc = self.backbone.encode(chunk)
            for i, t in enumerate(chunk):
                found[t] = enc.index(slice(i, i + 1)).to(self.store)
        self._remember({t: found[t] for t in missing})
        return Cond.cat([found[t] for t in texts]).to(self.backbone.device)

    def _remember(self, new: dict[str, Cond]) -> None:
        if self.max_prompts == 0:
            return
        self._cache.update(new)
        while self.max_prompts is not None and len(self._cache) > self.max_prompts:
            self._cache.popitem(last=False)
