"""Backbone helpers the trainer relies on: the text-embedding cache off the accelerator, chunked decoding."""

from __future__ import annotations

import torch

from tafs.models.text_cache import TextEmbeddingCache

from conftest import LinearFakeBackbone


class CountingBackbone(LinearFakeBackbone):
    def __init__(self):
        super().__init__()
        self.encoded: list[list[str]] = []

    def encode(self, prompts):
        self.encoded.append(list(prompts))
        from tafs.models.backbone import Cond

        h = torch.stack([torch.full((3, 4), float(len(p))) for p in prompts])
        return Cond(h, h[:, 0])


def test_cache_encodes_each_prompt_once_and_keeps_it_on_the_store():
    bb = CountingBackbone()
    cache = TextEmbeddingCache(bb, max_batch=2)
    cond = cache(["bb", "a", "bb", "ccc"])
    assert bb.encoded == [["a", "bb"], ["ccc"]]  # sorted, in batches of max_batch
    assert cond.hidden[:, 0, 0].tolist() == [2.0, 1.0, 2.0, 3.0] and len(cache) == 3
    cache(["a", "ccc"])
    assert len(bb.encoded) == 2  # nothing new to encode
    assert all(c.hidden.device.type == "cpu" for c in cache._cache.values())


def test_decode_in_chunks_equals_all_at_once(tiny_backbone):
    x0 = torch.randn(7, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    whole = tiny_backbone.decode(x0)
    for chunk in (1, 3, 7, 100, 0, None):
        assert torch.equal(tiny_backbone.decode(x0, chunk), whole)


def test_bounded_cache_keeps_the_most_recent_and_zero_keeps_none():
    bb = CountingBackbone()
    cache = TextEmbeddingCache(bb, max_prompts=2)
    cache(["a", "bb"])
    cache(["a"])  # "a" is now the most recent
    cache(["ccc"])  # evicts "bb"
    assert list(cache._cache) == ["a", "ccc"]
    cache(["bb", "a"])
    assert bb.encoded[-1] == ["bb"]  # "a" was still cached, "bb" had to be encoded again
    none = TextEmbeddingCache(CountingBackbone(), max_prompts=0)
    cond = none(["x", "x", "yy"])
    assert len(none) == 0 and cond.hidden[:, 0, 0].tolist() == [1.0, 1.0, 2.0]
    none(["x"])
    assert none.backbone.encoded == [["x", "yy"], ["x"]]
