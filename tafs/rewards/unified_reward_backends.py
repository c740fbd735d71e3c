"""The two UnifiedReward judges: a Qwen2.5-VL in this process (transformers) and an OpenAI-compatible server.

Each answers ``generate(texts, images) -> answers``: one instruction and one PIL image (already 512 x 512) per
answer, decoded greedily. Parsing the answers is the reward's business (``unified_reward``), not theirs.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import torch

from tafs.rewards.runtime import batches, check_source, require, resident, resolve_device, resolve_dtype

IMAGE_TAG = "<image>\n"  # LLaVA's placeholder; a chat template that places the image itself drops it

log = logging.getLogger("tafs.rewards.unifiedreward")
RETRY_STATUS = {429, 500, 502, 503, 504}  # a busy or restarting server: worth another try


def _load_qwen(path: str, device: torch.device, dtype: torch.dtype):
    """Model and processor, as the UnifiedReward repository loads them (``Qwen2_5_VLForConditionalGeneration`` +
    ``AutoProcessor``); left padding so a batch's answers all start at the same position."""
    transformers = require("transformers", "transformers", "unifiedreward")
    try:
        model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=dtype)
        processor = transformers.AutoProcessor.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise OSError(f"unifiedreward reward: cannot load a Qwen2.5-VL judge from {path!r}: {e}") from e
    processor.tokenizer.padding_side = "left"
    return model.to(device).eval(), processor


class QwenVLJudge:
    """UnifiedReward-qwen (Qwen2.5-VL) in process: chat template with one image and the instruction, batched
    greedy generation. The model is loaded once per process (``runtime.resident``)."""

    def __init__(self, path: str, device: str = "auto", dtype: str = "bf16", batch_size: int = 8,
                 max_new_tokens: int = 512):
        self.path = check_source(path, "unifiedreward")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        key = ("unifiedreward-qwen", self.path, str(self.device), str(self.dtype))
        self.model, self.processor = resident(key, lambda: _load_qwen(self.path, self.device, self.dtype))

    def chat(self, text: str) -> str:
        """The model's input text for one image and one instruction (LLaVA's "<image>" tag dropped: the chat
        template places the image)."""
        text = text[len(IMAGE_TAG):] if text.startswith(IMAGE_TAG) else text
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def generate(self, texts: list[str], images: list) -> list[str]:
        answers: list[str] = []
        for s in batches(len(texts), self.batch_size):
            answers += self._generate([self.chat(t) for t in texts[s]], images[s])
        return answers

    @torch.no_grad()
    def _generate(self, chats: list[str], images: list) -> list[str]:
        inputs = self.processor(text=chats, images=images, padding=True, return_tensors="pt").to(self.device)
        # Greedy; the checkpoint's sampling settings (temperature, top_p, top_k) are switched off, not left to warn.
        out = self.model.generate(**inputs, do_sample=False, temperature=None, top_p=None, top_k=None,
                                  max_new_tokens=self.max_new_tokens)
        new = out[:, inputs["input_ids"].shape[1]:]
        return self.processor.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def chat_url(url: str) -> str:
    """``http://host:port``, ``.../v1`` or the full ``.../v1/chat/completions`` -> the chat-completions URL."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    return url + ("/chat/completions" if url.endswith("/v1") else "/v1/chat/completions")


def png_data_url(image) -> str:
    """A PIL image as a base64 PNG data URL (lossless: the judge sees the pixels that were generated)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class ServerDown(ConnectionError):
    """No OpenAI-compatible server answers at the configured URL."""


class EndpointJudge:
    """A judge behind an OpenAI-compatible ``/v1/chat/completions`` (sglang, vLLM): one request per image (an
    ``image_url`` part with a PNG data URL, then the text part, as Flow-GRPO sends them), temperature 0, sent
    ``workers`` at a time. The API key goes into the Authorization header only: never logged, never in errors."""

    def __init__(self, url: str, model: str, api_key: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 max_tokens: int = 512, workers: int = 8, timeout: float = 120.0, retries: int = 3):
        self.url = chat_url(url)
        self.model = model
        self.max_tokens = max_tokens
        self.workers = max(1, workers)
        self.timeout = timeout
        self.retries = max(1, retries)
        key = api_key if api_key is not None else os.environ.get(api_key_env) if api_key_env else None
        self._headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}

    def __repr__(self) -> str:
        return f"EndpointJudge(url={self.url!r}, model={self.model!r})"

    def payload(self, text: str, image) -> dict:
        content = [{"type": "image_url", "image_url": {"url": png_data_url(image)}}, {"type": "text", "text": text}]
        return {"model": self.model, "messages": [{"role": "user", "content": content}], "temperature": 0,
                "max_tokens": self.max_tokens}

    def generate(self, texts: list[str], images: list) -> list[str]:
        if not texts:
            return []
        with ThreadPoolExecutor(max_workers=min(self.workers, len(texts))) as pool:
            return list(pool.map(lambda ti: self._ask(self.payload(*ti)), zip(texts, images)))

    def _ask(self, payload: dict) -> str:
        """POST with retries on connection errors, timeouts and busy statuses (backoff 0.5, 1, 2 ... s)."""
        body = json.dumps(payload).encode()
        for attempt in range(self.retries):
            last = attempt == self.retries - 1
            try:
                request = urllib.request.Request(self.url, data=body, headers=self._headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return self._content(response.read())
            except urllib.error.HTTPError as e:
                detail = e.read()[:500].decode(errors="replace")
                if e.code not in RETRY_STATUS or last:
                    raise RuntimeError(f"unifiedreward reward: {self.url} answered HTTP {e.code}: {detail}") from e
                reason = f"HTTP {e.code}"
            except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as e:
                reason = str(getattr(e, "reason", e))
                if last:
                    raise ServerDown(f"unifiedreward reward: no OpenAI-compatible server answers at {self.url} "
                                     f"({reason}; {self.retries} tries): start it (e.g. `python -m "
                                     "sglang.launch_server --model-path CodeGoat24/UnifiedReward-7b-v1.5 ...`) or "
                                     "fix reward_models.unifiedreward.url") from e
            log.warning("unifiedreward: %s: %s; retrying", self.url, reason)
            time.sleep(0.5 * 2 ** attempt)
        raise AssertionError("unreachable")

    def _content(self, raw: bytes) -> str:
        """The answer text of a chat-completions response (an empty answer, e.g. null content, is "")."""
        try:
            return json.loads(raw)["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise RuntimeError(f"unifiedreward reward: {self.url} did not answer in the chat-completions format: "
                               f"{raw[:300]!r}") from e
