"""A tiny random Qwen2.5-VL in the hub folder layout of ``CodeGoat24/UnifiedReward-qwen-7b``.

``Qwen2_5_VLForConditionalGeneration.from_pretrained(folder)`` and ``AutoProcessor.from_pretrained(folder)``
load it offline through the same code path as the real repository: ``config.json`` (model_type
``qwen2_5_vl``), safetensors weights, ``generation_config.json``, the processor (``Qwen2_5_VLProcessor``:
``Qwen2VLImageProcessor`` + ``Qwen2VLVideoProcessor`` + a ``Qwen2Tokenizer``) and its chat template.

What differs from the real model: every size, the vocabulary (a byte-level BPE trained here, offline, on
the reward's own prompt, with the Qwen2.5-VL special tokens added), so token ids differ too (the config's
``image_token_id`` & co. point at this vocabulary), and the processor's ``max_pixels`` (a 512 px image becomes
8x8 patches = 16 image tokens instead of 324). The weights are random: the answers are gibberish, which is
exactly the "unparsable answer" path of the reward.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# The special tokens of Qwen2.5-VL's tokenizer, in the real repository's id order (151643...).
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                  "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]

# Qwen2.5-VL's chat template (chat_template.json of Qwen/Qwen2.5-VL-7B-Instruct and UnifiedReward-qwen-7b).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)

MIN_PIXELS = 56 * 56
MAX_PIXELS = 112 * 112  # a 512 px image -> 112 x 112 -> 8 x 8 patches of 14 -> 16 tokens after the 2 x 2 merge


def _corpus() -> list[str]:
    """Text the tiny BPE is trained on: the reward's prompts and typical answers, so prompts are short."""
    from tafs.rewards.unified_reward import PROMPTS

    answers = ["Final Score: 1", "Final Score: 2", "Final Score: 3", "Final Score: 4", "Final Score: 5",
               "Alignment Score: 4.5", "a photo of a cat and a dog", "element (object): 1"]
    return [p.format(prompt="a photo of a red apple on a table") for p in PROMPTS.values()] + answers


def _tokenizer():
    """A ``Qwen2Tokenizer`` (byte-level BPE, Qwen's pre-tokenizer) with a vocabulary trained offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    base = Qwen2Tokenizer()  # only for its pre-tokenizer (Qwen's split regex + byte level)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = base.backend_tokenizer.pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(_corpus(), trainer)
    vocab = dict(sorted(bpe.get_vocab().items(), key=lambda kv: kv[1]))
    merges = _merges(bpe)
    n = len(vocab)
    for i, tok in enumerate(SPECIAL_TOKENS):
        vocab[tok] = n + i
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>",
                         pad_token="<|endoftext|>", errors="replace", model_max_length=32768)
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    return tok


def _merges(bpe) -> list[tuple[str, str]]:
    """The merges of a trained ``tokenizers`` BPE, read back from its JSON form ("a b" strings or pairs)."""
    merges = json.loads(bpe.to_str())["model"]["merges"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]


def _config(tok):
    from transformers import Qwen2_5_VLConfig

    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, window_size=56, out_hidden_size=64, fullatt_block_indexes=[1])
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                            video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                            vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)


def save_tiny(folder: Path, seed: int = 0) -> Path:
    """Write the tiny random UnifiedReward-qwen model (weights, processor, chat template) to ``folder``."""
    from transformers import (GenerationConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer()
    config = _config(tok)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id, pad_token_id=config.text_config.pad_token_id,
        eos_token_id=[config.text_config.eos_token_id, config.text_config.bos_token_id])
    model.save_pretrained(folder)
    image_processor = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    video_processor = Qwen2VLVideoProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tok, video_processor=video_processor,
                                    chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(folder)
    return folder
