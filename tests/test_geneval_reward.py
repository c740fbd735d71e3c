"""The GenEval rewards end to end on tiny random models, the colour crop, the HTTP scorer, prompt generation."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image

from tafs.rewards import registry, runtime
from tafs.rewards.geneval import rules
from tafs.rewards.geneval.colour import GREY, TEMPLATES, crop_on_grey, trim
from tafs.rewards.geneval.detector import class_names, mask_boxes, resized_size
from tafs.rewards.geneval.reward import quantise
from tafs.rewards.tiny.geneval import save_tiny
from tafs.tasks import geneval_prompts as gp

MOUSE = "computer mouse"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    runtime.clear_resident()
    folder = save_tiny(tmp_path_factory.mktemp("geneval_tiny"))
    yield {"detector": str(folder / "detector"), "clip": str(folder / "clip"), "device": "cpu"}
    runtime.clear_resident()


def _images(n: int = 4, size: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_end_to_end_and_shared_models(tiny):
    strict_fn, score_fn = registry.build("geneval", **tiny), registry.build("geneval_score", **tiny)
    assert strict_fn.shared is score_fn.shared  # one scorer, so one detector and one CLIP
    assert sum(k[0] == "geneval-detector" for k in runtime._RESIDENT) == 1
    backend = strict_fn.shared.backend
    images = _images()
    # the tiny detector finds one computer mouse per image (score ~0.5); what colour does CLIP call each?
    found = backend.detector.detect(quantise(images), 0.3)
    assert [[d.cls for d in f] for f in found] == [[MOUSE]] * 4 and all(0.3 < f[0].score < 0.9 for f in found)
    crop = crop_on_grey(quantise(images)[1], found[1][0].mask, found[1][0].box)
    colour = backend.colours.classify([crop], [MOUSE])[0]
    other = next(c for c in rules.COLORS if c != colour)
    metadata = [
        {"tag": "single_object", "include": [{"class": MOUSE, "count": 1}]},
        {"tag": "colors", "include": [{"class": MOUSE, "count": 1, "color": colour}]},
        {"tag": "counting", "include": [{"class": MOUSE, "count": 2}], "exclude": [{"class": MOUSE, "count": 3}]},
        {"tag": "position", "include": [{"class": MOUSE, "count": 1},
                                         {"class": MOUSE, "count": 1, "position": ["left of", 0]}]}]
    prompts = ["a photo of a computer mouse"] * 4
    strict, score = strict_fn(prompts, metadata, images), score_fn(prompts, metadata, images)
    assert strict_fn.shared.calls == 1  # the second reward reused the first's verdicts
    assert strict.tolist() == [1.0, 1.0, 0.0, 0.0]
    # counting: 0.5 < 0.9 -> none; position: the same box twice -> no relation (terms 1 | 1, 0, 1)
    assert score.tolist() == [1.0, 1.0, 0.0, 0.75]
    assert ((score >= 0) & (score <= 1)).all() and score.dtype == torch.float32
    metadata[1] = {"tag": "colors", "include": [{"class": MOUSE, "count": 1, "color": other}]}
    assert score_fn(prompts, metadata, images)[1].item() == 0.5 and strict_fn.shared.calls == 2
    images.mul_(0.5)  # an in-place change is a new batch
    strict_fn(prompts, metadata, images)
    assert strict_fn.shared.calls == 3
    with torch.inference_mode():  # no version counter: the values tell
        frozen = images.clone()
        strict_fn(prompts, metadata, frozen)
        score_fn(prompts, metadata, frozen)
        assert strict_fn.shared.calls == 4
        frozen.add_(0.1)
        score_fn(prompts, metadata, frozen)
        assert strict_fn.shared.calls == 5


def test_detector_size_from_processor_and_bad_metadata(tiny):
    reward = registry.build("geneval", detector_size=None, **tiny)
    assert reward.shared.backend.detector.scale == (64, 128)
    with pytest.raises(ValueError, match="tag must be one of"):
        reward(["x"], [{"tag": "nope", "include": [{"class": "cat", "count": 1}]}], _images(1))


def test_detector_post_processing_by_hand(tiny):
    detector = registry.build("geneval", **tiny).shared.backend.detector
    n_cls = len(detector.names)
    cls_logits = torch.zeros(2, n_cls + 1)
    cls_logits[0, rules.CLASSES.index("cat")] = 10.0
    mask_logits = torch.full((2, 4, 6), -5.0)
    mask_logits[0, 1:3, 2:5] = 5.0
    dets = detector.postprocess(cls_logits, mask_logits, (4, 6), (4, 6), (4, 6), 0.3)
    prob = torch.softmax(cls_logits[0], -1)[rules.CLASSES.index("cat")].item()
    assert len(dets) == 1 and dets[0].cls == "cat" and dets[0].box == (2.0, 1.0, 5.0, 3.0)
    assert dets[0].score == pytest.approx(prob * torch.sigmoid(torch.tensor(5.0)).item(), rel=1e-5)
    assert dets[0].mask.sum().item() == 6
    assert mask_boxes(torch.zeros(1, 3, 3, dtype=torch.bool)).tolist() == [[0.0, 0.0, 0.0, 0.0]]
    assert resized_size(1024, 1024, (800, 1333)) == (800, 800)
    assert resized_size(512, 1024, (800, 1333)) == (667, 1333)
    assert class_names({"0": "mouse", "1": "dining_table", "2": "wall-other-merged"}) == \
        ["computer mouse", "dining table", None]


def test_crop_on_grey_by_hand_and_like_pil():
    image = torch.arange(3 * 4 * 5, dtype=torch.float32).view(3, 4, 5) / 100
    mask = torch.zeros(4, 5, dtype=torch.bool)
    mask[1, 2] = mask[2, 1] = True
    crop = crop_on_grey(image, mask, (0.6, 0.9, 3.4, 3.2))  # rounded like PIL: x 1..3, y 1..3
    expected = torch.full((3, 2, 2), GREY)
    expected[:, 0, 1] = image[:, 1, 2]
    expected[:, 1, 0] = image[:, 2, 1]
    assert torch.equal(crop, expected)
    # GenEval's own path: PIL composite over a "#999" image through the mask, then crop
    rgb = (torch.rand(3, 12, 16, generator=torch.Generator().manual_seed(1)) * 255).round() / 255
    big_mask = torch.rand(12, 16, generator=torch.Generator().manual_seed(2)) > 0.5
    pil = Image.fromarray((rgb * 255).to(torch.uint8).permute(1, 2, 0).numpy())
    blank = Image.new("RGB", pil.size, color="#999")
    ref = np.asarray(Image.composite(pil, blank, Image.fromarray(big_mask.numpy())).crop((3, 2, 11, 9)))
    ours = (crop_on_grey(rgb, big_mask, (3, 2, 11, 9)) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(ours, ref)
    assert trim(torch.zeros(3, 2, 100)).shape == (3, 2, 8)


def test_colour_classifier(tiny):
    colours = registry.build("geneval", **tiny).shared.backend.colours
    clf = colours.classifier("tv remote")
    assert clf.shape[0] == 10 and torch.allclose(clf.norm(dim=-1), torch.ones(10))
    texts = [t.format(color="orange", cls="tv remote") for t in TEMPLATES]
    mean = torch.nn.functional.normalize(colours.clip.text_embeddings(texts).mean(0), dim=-1)
    assert torch.allclose(clf[rules.COLORS.index("orange")], mean, atol=1e-6)
    assert texts[1] == "a photo of a orange-colored tv remote"  # GenEval never adjusts the article
    crops = [torch.rand(3, 5, 40), torch.rand(3, 30, 20)]
    assert all(c in rules.COLORS for c in colours.classify(crops, ["cup", "tv"]))


class _Scorer(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        sizes = [Image.open(io.BytesIO(base64.b64decode(s))).size for s in body["images"]]
        n = len(body["images"])
        answer = {"scores": [0.25 * sizes[i][0] / 64 for i in range(n)], "strict": [1, None][:n]}
        if body["prompts"][0] == "bad":
            answer = {"scores": [0.5]}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_http_scorer():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scorer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        strict_fn = registry.build("geneval", url=url, batch_size=2)
        score_fn = registry.build("geneval_score", url=url, batch_size=2)
        meta = [{"tag": "single_object", "include": [{"class": "cat", "count": 1}]}] * 3
        images = _images(3)
        strict = strict_fn(["a photo of a cat"] * 3, meta, images)
        score = score_fn(["a photo of a cat"] * 3, meta, images)
        assert len(_Scorer.requests) == 2  # batches of 2 + 1, shared by both rewards
        assert strict[0] == 1 and torch.isnan(strict[1]) and strict[2] == 1
        assert score.tolist() == [0.25, 0.25, 0.25]
        first = _Scorer.requests[0]
        assert first["metadata"][0]["prompt"] == "a photo of a cat" and first["metadata"][0]["tag"] == "single_object"
        decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(first["images"][1]))))
        assert np.array_equal(decoded, (quantise(images[1]) * 255).to(torch.uint8).permute(1, 2, 0).numpy())
        with pytest.raises(RuntimeError, match="must answer"):
            strict_fn(["bad"], meta[:1], images[:1])
    finally:
        server.shutdown()


OFFICIAL_SHA256 = "6e41e876a27de27e7d88e719f3f6846909e5195c1e80bb569a3e0da84da7336a"  # evaluation_metadata.jsonl


def test_test_split_is_the_official_suite():
    suite = gp.official_suite()
    text = "".join(json.dumps(s, sort_keys=True) + "\n" for s in suite)
    assert hashlib.sha256(text.encode()).hexdigest() == OFFICIAL_SHA256
    test = gp.generate("test")
    assert len(test) == 553 and test[0].text == "a photo of a bench" and test[-1].category == "color_attr"
    assert {t: sum(p.category == t for p in test) for t in rules.TAGS} == gp.OFFICIAL_COUNTS
    counting = next(p for p in test if p.category == "counting")
    assert counting.metadata["exclude"][0]["count"] == counting.metadata["include"][0]["count"] + 1
    assert gp.make_plural("bus") == "buses" and gp.with_article("orange") == "an orange"


def test_train_split_deterministic_and_held_out():
    train = gp.generate("train", n=1000)
    assert [p.text for p in train] == [p.text for p in gp.generate("train", n=1000)]
    assert [p.text for p in train] != [p.text for p in gp.generate("train", n=1000, seed=1)]
    assert len(train) == 1000 and "single_object" not in {p.category for p in train}  # all 80 are test prompts
    test_units = set().union(*(gp.units(p.metadata) for p in gp.generate("test")))
    assert not any(gp.units(p.metadata) & test_units for p in train)
    assert not {p.text for p in train} & {p.text for p in gp.generate("test")}
    for p in train:
        rules.check_metadata(p.metadata, p.text)
        assert p.category == p.metadata["tag"] and set(p.metadata) == {"tag", "include", "exclude"}
    small = gp.generate("test", n=60, seed=3)
    assert len(small) == 60 == len({p.text for p in small})
    small_train = gp.generate("train", n=200, test_n=60, test_seed=3)
    assert "single_object" in {p.category for p in small_train}  # not every class is held out now
    held = set().union(*(gp.units(p.metadata) for p in small))
    assert not any(gp.units(p.metadata) & held for p in small_train)
