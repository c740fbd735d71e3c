"""The shapes world: renderer, GenEval-style evaluator, prompt splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tafs.toyworld import evaluator
from tafs.toyworld.prompts import (CATEGORIES, ObjectSpec, PromptSpec, all_specs, prompt_set, spec_from_dict,
                                   spec_to_dict, split_specs)
from tafs.toyworld.render import GRID, IMAGE_SIZE, draw, relation_holds, render, sample_layout

LAYOUTS_PER_PROMPT = 3


def _img(layout):
    return torch.from_numpy(draw(layout))


# -- evaluator on ground truth ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gt_scores():
    specs = prompt_set("all")
    rng = np.random.default_rng(0)
    rep = [s for s in specs for _ in range(LAYOUTS_PER_PROMPT)]
    images = render(rep, rng)
    return rep, images, evaluator.evaluate_images(rep, images)


def test_prompt_set_all_covers_every_category(gt_scores):
    specs = prompt_set("all")
    assert {s.category for s in specs} == set(CATEGORIES)
    # 4 + 6 + 8 + 16 + 48 + 72 combinations
    assert len(specs) == 154


def test_ground_truth_is_correct(gt_scores):
    rep, _, scores = gt_scores
    correct = np.array([s.correct for s in scores])
    dense = np.array([s.dense for s in scores])
    assert correct.mean() >= 0.99
    assert dense.mean() >= 0.99
    for cat in CATEGORIES:
        idx = [i for i, s in enumerate(rep) if s.category == cat]
        assert np.mean(correct[idx]) >= 0.99, cat
    # in fact every ground-truth render should pass
    failures = [(rep[i].text, scores[i]) for i in range(len(rep)) if scores[i].correct != 1.0]
    assert not failures, failures[:5]


def test_ground_truth_with_small_noise_is_correct():
    specs = prompt_set("all")[::7]
    rng = np.random.default_rng(1)
    images = render(specs, rng)
    noisy = (images + 0.05 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    scores = evaluator.evaluate_images(specs, noisy)
    assert all(s.correct == 1.0 for s in scores)


def test_blank_images_score_zero():
    specs = prompt_set("all")[::5]
    blank = torch.zeros(len(specs), 3, IMAGE_SIZE, IMAGE_SIZE)
    scores = evaluator.evaluate_images(specs, blank)
    assert all(s.correct == 0.0 for s in scores)
    assert all(s.dense == 0.0 for s in scores)


def test_evaluate_images_length_mismatch():
    specs = prompt_set("all")[:3]
    with pytest.raises(ValueError):
        evaluator.evaluate_images(specs, torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE))


# -- hand-made images with a known number of satisfied constraints ------------------------------------

def test_wrong_color_single_object():
    spec = PromptSpec("colors", (ObjectSpec("square", "red"),))
    dets = evaluator.detect(_img([(5, "square", "blue")]))
    assert dets == [evaluator.Detection(5, "square", "blue")]
    s = evaluator.score(spec, dets)
    # constraints: count (ok), red square matched (no) -> 1 / 2
    assert s.correct == 0.0
    assert s.dense == pytest.approx(1 / 2)
    # the same image in the right colour passes
    ok = evaluator.score(spec, evaluator.detect(_img([(5, "square", "red")])))
    assert ok.correct == 1.0 and ok.dense == 1.0


def test_wrong_color_one_of_two_objects():
    spec = PromptSpec("color_attr", (ObjectSpec("square", "red"), ObjectSpec("ring", "blue")))
    s = evaluator.score(spec, evaluator.detect(_img([(0, "square", "red"), (10, "ring", "green")])))
    # count ok, red square ok, blue ring missing -> 2 / 3
    assert s.correct == 0.0
    assert s.dense == pytest.approx(2 / 3)


def test_wrong_count():
    spec = PromptSpec("counting", (ObjectSpec("cross"), ObjectSpec("cross")))
    s = evaluator.score(spec, evaluator.detect(_img([(0, "cross", "red"), (5, "cross", "green"),
                                                     (15, "cross", "yellow")])))
    # count wrong, both required crosses matched -> 2 / 3, times 2 required / 3 detected (extra object)
    assert s.correct == 0.0
    assert s.dense == pytest.approx(2 / 3 * 2 / 3)


def test_missing_object_two_object():
    spec = PromptSpec("two_object", (ObjectSpec("triangle"), ObjectSpec("ring")))
    s = evaluator.score(spec, evaluator.detect(_img([(3, "triangle", "yellow")])))
    # count wrong, triangle ok, ring missing -> 1 / 3
    assert s.correct == 0.0
    assert s.dense == pytest.approx(1 / 3)


@pytest.mark.parametrize("relation,cell_a,cell_b", [
    ("left of", 1, 0),   # square right of the ring
    ("right of", 4, 6),  # square left of the ring
    ("above", 9, 1),     # square below the ring
    ("below", 2, 14),    # square above the ring
])
def test_position_reversed_is_not_correct(relation, cell_a, cell_b):
    spec = PromptSpec("position", (ObjectSpec("square"), ObjectSpec("ring")), relation)
    wrong = evaluator.score(spec, evaluator.detect(_img([(cell_a, "square", "red"), (cell_b, "ring", "blue")])))
    # count ok, both matched, relation fails -> 3 / 4
    assert wrong.correct == 0.0
    assert wrong.dense == pytest.approx(3 / 4)
    right = evaluator.score(spec, evaluator.detect(_img([(cell_b, "square", "red"), (cell_a, "ring", "blue")])))
    assert right.correct == 1.0 and right.dense == 1.0


def test_relation_holds_by_hand():
    # cell = row * 4 + col
    assert relation_holds("left of", 4, 6) and not relation_holds("left of", 6, 4)
    assert relation_holds("right of", 7, 0)
    assert relation_holds("above", 1, 9) and not relation_holds("above", 1, 2)
    assert relation_holds("below", 12, 3)
    assert not relation_holds("left of", 1, 5)  # same column


# -- renderer ---------------------------------------------------------------------------------------

def test_render_shape_and_range():
    specs = prompt_set("all")[::10]
    img = render(specs, np.random.default_rng(3))
    assert img.shape == (len(specs), 3, 32, 32)
    assert img.dtype == torch.float32
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    assert float(img.max()) == 1.0  # something was drawn


def test_render_is_seeded():
    specs = prompt_set("all")[::10]
    a = render(specs, np.random.default_rng(7))
    b = render(specs, np.random.default_rng(7))
    assert torch.equal(a, b)


def test_sample_layout_respects_spec():
    rng = np.random.default_rng(4)
    for spec in all_specs("position") + all_specs("color_attr")[:10]:
        for _ in range(3):
            layout = sample_layout(spec, rng)
            assert len(layout) == len(spec.objects)
            cells = [c for c, _, _ in layout]
            assert len(set(cells)) == len(cells) and all(0 <= c < GRID * GRID for c in cells)
            for (cell, shape, color), o in zip(layout, spec.objects):
                assert shape == o.shape
                if o.color:
                    assert color == o.color
            if spec.relation:
                assert relation_holds(spec.relation, cells[0], cells[1])


# -- prompts and splits -----------------------------------------------------------------------------

def test_prompt_texts_unique():
    texts = [s.text for s in prompt_set("all")]
    assert len(texts) == len(set(texts))


def test_spec_dict_round_trip():
    for spec in prompt_set("all")[::9]:
        assert spec_from_dict(spec_to_dict(spec)) == spec


@pytest.mark.parametrize("category", CATEGORIES)
def test_splits(category):
    full = all_specs(category)
    train = split_specs(category, "train")
    test = split_specs(category, "test")
    assert split_specs(category, "train") == train and split_specs(category, "test") == test  # deterministic
    assert split_specs(category, "all") == full
    assert set(train) | set(test) == set(full)
    if len(full) >= 16:
        assert not set(train) & set(test)
        assert len(test) == round(0.25 * len(full))
        assert len(train) + len(test) == len(full)
    else:
        assert train == full and test == full


def test_prompt_set_union():
    assert set(prompt_set("train")) | set(prompt_set("test")) == set(prompt_set("all"))
    big = [c for c in CATEGORIES if len(all_specs(c)) >= 16]
    assert big  # colors, position, color_attr
    assert not set(prompt_set("train", big)) & set(prompt_set("test", big))


def test_invalid_split_and_category():
    with pytest.raises(ValueError):
        split_specs("colors", "validation")
    with pytest.raises(ValueError):
        all_specs("nope")


def test_batched_detection_is_independent_of_the_batch():
    """detect_batch labels every cell of every image at once: the same detections as one at a time."""
    import numpy as np
    import torch

    from tafs.toyworld.evaluator import detect, detect_batch
    from tafs.toyworld.prompts import prompt_set
    from tafs.toyworld.render import render

    specs = prompt_set("test")[:24]
    clean = torch.as_tensor(render(specs, np.random.default_rng(3))).float()
    noisy = (clean + 0.3 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    batch = torch.cat([clean, noisy])
    together = detect_batch(batch)
    assert together == [detect(im) for im in batch]
    assert all(len(d) == len(s.objects) for d, s in zip(together[:24], specs))  # clean renders: exact counts
