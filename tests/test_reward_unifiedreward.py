"""UnifiedReward: score parsing, the in-process Qwen2.5-VL judge on a tiny random model saved in the hub layout,
and the OpenAI-compatible endpoint judge against a local fake server."""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from tafs.rewards import unified_reward as ur
from tafs.rewards import unified_reward_backends as backends
from tafs.rewards.registry import build, spec

PARSABLE = [
    ("Final Score: 4", 4.0),
    ("Final Score: 3.5", 3.5),
    ("**Final Score:** 4/5", 4.0),
    ("**Final Score**: 4", 4.0),
    ("cat (object): 1\ndog (object): 0\nFinal Score: 2", 2.0),
    ("final score: 5.0", 5.0),
    ("Final Score:4.", 4.0),
    ("Final Score: [3]", 3.0),
    ("Final score = 1", 1.0),
    ("Final Score: **4.5** out of 5", 4.5),
    ("Final Score: 2\n... on reflection ...\nFinal Score: 3", 3.0),  # the last one wins
    ("Alignment Score: 5\nQuality Score: 1\nFinal Score: 3", 3.0),
]
UNPARSABLE = [
    "",
    None,
    "I would give it a 4.",
    "Score: 4",
    "Final Score:",
    "Final Score: four",
    "Final Score: -1",
    "Final Score: 0",
    "Final Score: 6",
    "Final Score: 45",
    "Final Score: 5.5",
    "Final Score: 8/10",
    "Final Score: 4\nFinal Score: n/a",  # the last label has no number: the final verdict is missing
    "ticlonsid\x14Yourzttit",
]


@pytest.mark.parametrize("text,expected", PARSABLE)
def test_parse_score_parsable(text, expected):
    assert ur.parse_score(text) == expected


@pytest.mark.parametrize("text", UNPARSABLE)
def test_parse_score_unparsable(text):
    assert ur.parse_score(text) is None


def test_prompt_is_the_reference_text_with_the_caption():
    text = ur.build_prompt("a red apple")
    assert text.startswith("You are given a text caption and a generated image based on that caption.")
    assert "2. Overall Image Quality:" in text and "assign a score from 1 to 5 after 'Final Score:'" in text
    assert text.endswith("Text Caption: [a red apple]")
    assert ur.build_prompt("{x}", "flow_grpo").startswith("<image>\nYou are given")  # braces in captions are fine
    with pytest.raises(ValueError, match="prompt_style"):
        ur.build_prompt("a", "nope")


class Scripted:
    """A judge that answers from a script (and records what it was asked)."""

    def __init__(self, answers):
        self.answers, self.asked = list(answers), []

    def generate(self, texts, images):
        self.asked.append((texts, images))
        return self.answers[:len(texts)]


def test_answers_to_scores_count_and_report_the_unparsable(caplog):
    long_garbage = "x" * 1000
    reward = ur.UnifiedReward(Scripted(["Final Score: 4", long_garbage, "**Final Score:** 2/5"]))
    with caplog.at_level(logging.WARNING, logger="tafs.rewards.unifiedreward"):
        scores = reward(["a", "b", "c"], [{}, {}, {}], torch.rand(3, 3, 32, 48))
    assert scores.dtype == torch.float32 and scores.device.type == "cpu"
    assert scores[0] == 4 and math.isnan(scores[1]) and scores[2] == 2
    assert reward.invalid == 1 and reward.answered == 3 and list(reward.last_invalid) == [long_garbage]
    assert reward.report()["invalid"] == 1
    assert "scored NaN" in caplog.text and "[1000 chars]" in caplog.text and "x" * 400 not in caplog.text
    texts, images = reward.judge.asked[0]
    assert texts[0].endswith("Text Caption: [a]") and all(im.size == (512, 512) for im in images)


# --- in process: a tiny random Qwen2.5-VL in the layout of CodeGoat24/UnifiedReward-qwen-7b ---------------------


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from tafs.rewards.tiny.unifiedreward import save_tiny

    return save_tiny(tmp_path_factory.mktemp("unifiedreward") / "UnifiedReward-qwen-tiny")


def test_tiny_loads_through_the_real_classes(tiny_folder):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    reward = build("unifiedreward", path=str(tiny_folder), max_new_tokens=8)
    judge = reward.judge
    assert isinstance(judge.model, Qwen2_5_VLForConditionalGeneration)
    assert type(judge.processor).__name__ == "Qwen2_5_VLProcessor"
    assert type(AutoProcessor.from_pretrained(tiny_folder)).__name__ == "Qwen2_5_VLProcessor"
    assert judge.dtype == torch.float32 and judge.device.type == "cpu"  # bf16 asked, fp32 on the CPU
    chat = judge.chat(ur.build_prompt("a cat"))
    assert chat.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                           "<|vision_start|><|image_pad|><|vision_end|>You are given a text caption")
    assert chat.endswith("Text Caption: [a cat]<|im_end|>\n<|im_start|>assistant\n")
    images = ur.to_pil(torch.rand(2, 3, 512, 512), 512)
    inputs = judge.processor(text=[chat, judge.chat("short")], images=images, padding=True, return_tensors="pt")
    assert inputs["image_grid_thw"].tolist() == [[1, 8, 8], [1, 8, 8]]  # 512 px -> 8 x 8 patches -> 16 tokens
    assert (inputs["input_ids"] == judge.model.config.image_token_id).sum(1).tolist() == [16, 16]
    assert inputs["attention_mask"][1, 0] == 0 and inputs["attention_mask"][:, -1].all()  # left padding


def test_tiny_generates_end_to_end_and_random_answers_are_nan(tiny_folder, caplog):
    reward = build("unifiedreward", path=str(tiny_folder), max_new_tokens=8)
    images = torch.rand(2, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING, logger="tafs.rewards.unifiedreward"):
        scores = reward(["a photo of a cat", "two dogs on a long red sofa"], [{}, {}], images)
    assert scores.shape == (2,) and torch.isnan(scores).all()
    assert reward.invalid == 2 and len(reward.last_invalid) == 2 and caplog.text.count("scored NaN") == 2
    assert all(isinstance(a, str) and a for a in reward.last_invalid)


def test_tiny_batches_with_left_padding_like_one_by_one(tiny_folder):
    """Greedy answers do not depend on the batch: left padding leaves each sample's continuation unchanged."""
    prompts = ["a cat", "two dogs and a very long caption about a red sofa in a sunny room"]
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    texts = [ur.build_prompt(p) for p in prompts]
    pil = ur.to_pil(images, 512)
    batched = backends.QwenVLJudge(str(tiny_folder), batch_size=2, max_new_tokens=6).generate(texts, pil)
    alone = backends.QwenVLJudge(str(tiny_folder), batch_size=1, max_new_tokens=6).generate(texts, pil)
    assert batched == alone


def test_tiny_forced_answers_are_parsed(tiny_folder, monkeypatch):
    """The full in-process path (chat template, processor, generate) with the decode step answering as a trained
    judge would: the reward parses and counts what the backend returns."""
    reward = build("unifiedreward", path=str(tiny_folder), max_new_tokens=4)
    processor = reward.judge.processor
    decoded = []

    def decode(ids, **kwargs):
        decoded.append(ids.shape)
        return ["cat (object): 1\nFinal Score: 4", "no verdict"][:len(ids)]

    monkeypatch.setattr(processor, "batch_decode", decode)
    scores = reward(["a cat", "a dog"], [{}, {}], torch.rand(2, 3, 512, 512))
    assert decoded and decoded[0][0] == 2 and decoded[0][1] <= 4  # only the new tokens are decoded
    assert scores[0] == 4 and math.isnan(scores[1]) and reward.invalid == 1


def test_factory_arguments(tiny_folder, monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="not both"):
        build("unifiedreward", path=str(tiny_folder), url="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="served model"):
        build("unifiedreward", path=str(tiny_folder), model="x")
    with pytest.raises(FileNotFoundError, match="unifiedreward"):
        build("unifiedreward", path=str(tmp_path / "missing"))
    seen = {}
    monkeypatch.setattr(backends, "QwenVLJudge", lambda path, **kw: seen.setdefault("path", path) and Scripted([]))
    build("unifiedreward")
    assert seen["path"] == "CodeGoat24/UnifiedReward-qwen-7b"
    s = spec("unifiedreward")
    assert s.label == "UnifiedReward" and "1-5" in s.scale and "OpenAI" in s.source


# --- an OpenAI-compatible server --------------------------------------------------------------------------------


class FakeOpenAI(BaseHTTPRequestHandler):
    """Checks each request as sglang/vLLM would receive it; answers a verdict for captions with "good"."""

    errors: list[str] = []
    requests: list[dict] = []
    busy_once = False
    key = "sk-test-secret"

    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):
        cls = type(self)
        raw = self.rfile.read(int(self.headers["Content-Length"]))  # read first: an unread body can reset the socket
        if cls.busy_once:
            cls.busy_once = False
            return self._send(503, {"error": "warming up"})
        body = json.loads(raw)
        cls.requests.append(body)
        problems = self._check(body)
        cls.errors += problems
        if problems:
            return self._send(400, {"error": problems})
        text = body["messages"][0]["content"][1]["text"]
        answer = "Alignment is fine, quality good.\nFinal Score: 4" if "good" in text else "I cannot tell."
        self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]})

    def _check(self, body) -> list[str]:
        from PIL import Image

        problems = []
        if self.path != "/v1/chat/completions":
            problems.append(f"path {self.path}")
        if self.headers.get("Authorization") != f"Bearer {self.key}":
            problems.append("authorization")
        if body.get("model") != "UnifiedReward-7b-v1.5" or body.get("temperature") != 0 or body.get("max_tokens") != 64:
            problems.append(f"settings {body.get('model')} {body.get('temperature')} {body.get('max_tokens')}")
        image_part, text_part = body["messages"][0]["content"]
        prefix = "data:image/png;base64,"
        url = image_part["image_url"]["url"]
        if image_part["type"] != "image_url" or not url.startswith(prefix):
            problems.append("image part")
        elif Image.open(io.BytesIO(base64.b64decode(url[len(prefix):]))).size != (512, 512):
            problems.append("image size")
        if text_part["type"] != "text" or "Text Caption: [" not in text_part["text"]:
            problems.append("text part")
        return problems

    def _send(self, status: int, obj: dict):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake_server():
    FakeOpenAI.errors, FakeOpenAI.requests, FakeOpenAI.busy_once = [], [], False
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_endpoint_request_format_and_scores(fake_server, monkeypatch, caplog):
    monkeypatch.setenv("UR_TEST_KEY", FakeOpenAI.key)
    reward = build("unifiedreward", url=fake_server, model="UnifiedReward-7b-v1.5", api_key_env="UR_TEST_KEY",
                   max_new_tokens=64, batch_size=2)
    FakeOpenAI.busy_once = True  # the first request gets a 503 and is retried
    with caplog.at_level(logging.WARNING, logger="tafs.rewards.unifiedreward"):
        scores = reward(["a good cat", "a dog"], [{}, {}], torch.rand(2, 3, 64, 64))  # resized to 512 on the way
    assert FakeOpenAI.errors == []
    assert scores[0] == 4 and math.isnan(scores[1]) and reward.invalid == 1
    assert list(reward.last_invalid) == ["I cannot tell."]
    captions = sorted(r["messages"][0]["content"][1]["text"].rsplit("[", 1)[1] for r in FakeOpenAI.requests)
    assert captions == ["a dog]", "a good cat]"]
    assert "HTTP 503" in caplog.text and FakeOpenAI.key not in caplog.text and FakeOpenAI.key not in repr(reward.judge)


def test_endpoint_server_down_names_the_url():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reward = build("unifiedreward", url=f"http://127.0.0.1:{port}/v1", retries=2, timeout=2, api_key="sk-secret")
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=f"http://127.0.0.1:{port}/v1/chat/completions") as info:
        reward(["a cat"], [{}], torch.rand(1, 3, 16, 16))
    assert time.monotonic() - start < 5 and "sk-secret" not in str(info.value)


def test_chat_url_forms():
    assert backends.chat_url("http://h:1") == "http://h:1/v1/chat/completions"
    assert backends.chat_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert backends.chat_url("http://h:1/v1/chat/completions") == "http://h:1/v1/chat/completions"
