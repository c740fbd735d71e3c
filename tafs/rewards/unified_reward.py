"""UnifiedReward as a reward: a vision-language judge reads the caption and the image and answers with a
"Final Score:" from 1 to 5; the score is that number, parsed from the answer.

Two ways to run the judge (``unified_reward_backends``): in process with transformers
(``CodeGoat24/UnifiedReward-qwen-7b``, a Qwen2.5-VL; ``path``), or through an OpenAI-compatible chat-completions
server (``url``), e.g. sglang or vLLM serving ``CodeGoat24/UnifiedReward-7b-v1.5`` as Flow-GRPO does. Both see the
image resized to 512 x 512 and decode greedily (temperature 0).

An answer without a parsable final score is an error of the judge, not a low score: it becomes NaN in the scores
(evaluations count and report it, training refuses it), ``reward.invalid`` counts it, ``reward.last_invalid`` keeps
the last raw answers for the report, and a warning shows it (truncated).
"""

from __future__ import annotations

import logging
import math
import re
from collections import deque
from typing import Mapping, Protocol, Sequence

import torch
import torch.nn.functional as F

from tafs.rewards.base import RewardSpec, check_batch

log = logging.getLogger("tafs.rewards.unifiedreward")

DEFAULT_PATH = "CodeGoat24/UnifiedReward-qwen-7b"
DEFAULT_SERVED_MODEL = "CodeGoat24/UnifiedReward-7b-v1.5"  # vLLM's served name when started from the hub id

# The judge's instructions, verbatim from their sources; ``{prompt}`` is the caption.
# "point": CodeGoat24/UnifiedReward, inference_qwen/image_generation/qwen_point_score_image_generation.py (the
#   model card's point score for image generation; also inference_llava/image_generation/, with "<image>\n").
# "flow_grpo": yifan123/flow_grpo, flow_grpo/rewards.py `unifiedreward_score_sglang` (= UnifiedReward's
#   sglang_llava/sglang_inference.py): the text Flow-GRPO sends to its sglang server, "<image>\n" included.
_CRITERIA = (  # the part both texts share
    "You are given a text caption and a generated image based on that caption. Your task is to evaluate this "
    "image based on two key criteria:\n"
    "1. Alignment with the Caption: Assess how well this image aligns with the provided caption. Consider the "
    "accuracy of depicted objects, their relationships, and attributes as described in the caption.\n"
    "2. Overall Image Quality: Examine the visual quality of this image, including clarity, detail "
    "preservation, color accuracy, and overall aesthetic appeal.\n"
)
_TASK = "Your task is provided as follows:\nText Caption: [{prompt}]"
PROMPTS: dict[str, str] = {
    "point": _CRITERIA + (
        "Extract key elements from the provided text caption, evaluate their presence in the generated image using "
        "the format: 'element (type): value' (where value=0 means not generated, and value=1 means generated), and "
        "assign a score from 1 to 5 after 'Final Score:'.\n") + _TASK,
    "flow_grpo": "<image>\n" + _CRITERIA + "Based on the above criteria, assign a score from 1 to 5 after "
                 "'Final Score:'.\n" + _TASK,
}

SCORE_MIN, SCORE_MAX = 1.0, 5.0
_LABEL = re.compile(r"final\s*score", re.IGNORECASE)
# What may follow the label: markdown emphasis, a colon (ASCII or full width) or "=", an optional bracket, the
# number, an optional closing bracket, an optional "/ 5" or "out of 5".
_VALUE = re.compile(r"\s*[*_]*\s*[:：=]?\s*[*_]*\s*[\[(]?\s*(?P<num>\d+(?:\.\d+)?)\s*[\])]?\s*[*_]*\s*"
                    r"(?:(?:/|out\s+of)\s*(?P<den>\d+(?:\.\d+)?))?", re.IGNORECASE)
KEEP_INVALID = 8  # raw unparsable answers kept on the reward for the report
LOG_CHARS = 300  # how much of an unparsable answer a warning shows
WARN_FIRST = 3  # unparsable answers logged one by one; after that every 100th (all are counted and kept in report())


def build_prompt(caption: str, style: str = "point") -> str:
    """The judge's instruction for ``caption`` (``style``: a key of ``PROMPTS``)."""
    if style not in PROMPTS:
        raise ValueError(f"unifiedreward reward: prompt_style must be one of {sorted(PROMPTS)}, got {style!r}")
    return PROMPTS[style].replace("{prompt}", caption)


def parse_score(text: str | None) -> float | None:
    """The final score of a judge's answer, or None when it has none.

    Parsable: the LAST occurrence of "Final Score" (any case, any spacing between the words) followed by a number,
    with optional markdown emphasis, ":" / "：" / "=", brackets and a "/5" or "out of 5" around it: "Final Score: 4",
    "Final Score: 3.5", "**Final Score:** 4/5", "final score = [4]", "Final Score: **4.5** out of 5".
    Not parsable (None): no "Final Score" label; the last label not followed by a number ("Final Score: four",
    "Final Score: -1", an answer cut off after the label) even when an earlier label had one; a number outside
    [1, 5] ("Final Score: 0", "Final Score: 45"); a denominator other than 5 ("Final Score: 8/10").
    """
    if not text:
        return None
    labels = list(_LABEL.finditer(text))
    if not labels:
        return None
    m = _VALUE.match(text, labels[-1].end())
    if m is None:
        return None
    if m.group("den") is not None and float(m.group("den")) != SCORE_MAX:
        return None
    value = float(m.group("num"))
    return value if SCORE_MIN <= value <= SCORE_MAX else None


def to_pil(images: torch.Tensor, size: int | None) -> list:
    """Images (N, 3, H, W) in [0, 1] -> N RGB PIL images of ``size`` x ``size`` (bicubic, antialiased, on the
    images' device; None or 0 keeps their size). Like Flow-GRPO's ``Image.resize((512, 512))``, non-square images
    are squashed, not cropped."""
    from PIL import Image

    x = images.detach().float()
    if size and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    arr = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, mode="RGB") for a in arr]


class Judge(Protocol):
    """A backend: one answer per (instruction, image)."""

    def generate(self, texts: list[str], images: list) -> list[str]:
        ...


class UnifiedReward:
    """The reward: caption + image -> the judge's parsed final score (1-5), NaN when unparsable."""

    def __init__(self, judge: Judge, prompt_style: str = "point", image_size: int | None = 512):
        build_prompt("", prompt_style)  # validate the style now, not at the first batch
        self.judge = judge
        self.prompt_style = prompt_style
        self.image_size = image_size
        self.answered = 0  # answers seen
        self.invalid = 0  # of which unparsable (scored NaN)
        self.last_invalid: deque[str] = deque(maxlen=KEEP_INVALID)

    def __call__(self, prompts: Sequence[str], metadata: Sequence[Mapping], images: torch.Tensor) -> torch.Tensor:
        check_batch(prompts, metadata, images)
        if len(prompts) == 0:
            return torch.zeros(0)
        texts = [build_prompt(p, self.prompt_style) for p in prompts]
        answers = self.judge.generate(texts, to_pil(images, self.image_size))
        if len(answers) != len(texts):
            raise RuntimeError(f"unifiedreward reward: the judge returned {len(answers)} answers for {len(texts)} "
                               "images")
        return self.score_answers(answers)

    def score_answers(self, answers: Sequence[str]) -> torch.Tensor:
        """Parsed scores (N,) float32 on the CPU; unparsable answers are NaN, counted, kept and logged."""
        scores = []
        for answer in answers:
            value = parse_score(answer)
            self.answered += 1
            if value is None:
                self._invalid(answer)
            scores.append(math.nan if value is None else value)
        return torch.tensor(scores, dtype=torch.float32)

    def _invalid(self, answer: str | None) -> None:
        self.invalid += 1
        text = answer or ""
        self.last_invalid.append(text)
        shown = text if len(text) <= LOG_CHARS else text[:LOG_CHARS] + f"... [{len(text)} chars]"
        if self.invalid <= WARN_FIRST or self.invalid % 100 == 0:  # the first few, then a count now and then
            log.warning("unifiedreward: answer without a parsable 'Final Score' 1-5 (scored NaN; %d of %d so far): "
                        "%r", self.invalid, self.answered, shown)

    def report(self) -> dict:
        """What an evaluation reports about the judge's failures."""
        return {"answered": self.answered, "invalid": self.invalid, "last_invalid": list(self.last_invalid)}


def unifiedreward(path: str | None = None, url: str | None = None, model: str | None = None,
                  api_key: str | None = None, api_key_env: str = "OPENAI_API_KEY", device: str = "auto",
                  dtype: str = "bf16", batch_size: int = 8, max_new_tokens: int = 512, image_size: int | None = 512,
                  prompt_style: str = "point", timeout: float = 120.0, retries: int = 3) -> UnifiedReward:
    """UnifiedReward from a transformers Qwen2.5-VL (``path``: folder or hub id; default
    ``CodeGoat24/UnifiedReward-qwen-7b``) or an OpenAI-compatible server (``url``; ``model`` its served model name,
    the key from ``api_key`` or the environment variable ``api_key_env``). Exactly one of ``path`` and ``url``.

    ``batch_size``: images per ``generate`` call in process, concurrent requests for a server. ``max_new_tokens``:
    the answer's length limit (``max_tokens`` of a request). ``device`` and ``dtype`` apply to the in-process judge
    only (the checkpoint's other generation settings, e.g. Qwen's repetition_penalty, are kept as the reference
    scripts keep them); ``timeout`` (s per request) and ``retries`` (tries on connection errors, timeouts, HTTP
    429/5xx) to the server only.
    """
    from tafs.rewards import unified_reward_backends as backends

    build_prompt("", prompt_style)
    if path is not None and url is not None:
        raise ValueError("unifiedreward reward: give either path (transformers) or url (an OpenAI-compatible "
                         "server), not both")
    if url is not None:
        judge = backends.EndpointJudge(url, model=model or DEFAULT_SERVED_MODEL, api_key=api_key,
                                       api_key_env=api_key_env, max_tokens=max_new_tokens, workers=batch_size,
                                       timeout=timeout, retries=retries)
    else:
        if model is not None:
            raise ValueError("unifiedreward reward: `model` names the served model of a url; with path, path is "
                             "the model")
        judge = backends.QwenVLJudge(path or DEFAULT_PATH, device=device, dtype=dtype, batch_size=batch_size,
                                     max_new_tokens=max_new_tokens)
    return UnifiedReward(judge, prompt_style=prompt_style, image_size=image_size)


REWARDS = {
    "unifiedreward": RewardSpec(
        "unifiedreward", unifiedreward, "UnifiedReward",
        "a VLM judge (UnifiedReward) scores caption alignment + image quality; its 'Final Score' 1-5 is parsed, "
        "unparsable answers are NaN and counted (reward_models.unifiedreward.path or .url)",
        scale="parsed 'Final Score' 1-5, ~3.3-3.9",
        source="CodeGoat24/UnifiedReward-qwen-7b (transformers) or an OpenAI-compatible URL"),
}
