"""GenEval's rules on synthetic detections: official correctness and Flow-GRPO's partial credit, by hand."""

from __future__ import annotations

import pytest

from tafs.rewards.geneval import rules
from tafs.rewards.geneval.rules import Detection, Thresholds, judge, relative_position, select


def det(cls: str, score: float = 0.95, box=(0, 0, 10, 10), color: str | None = None) -> Detection:
    return Detection(cls, score, tuple(float(v) for v in box), color=color)


SINGLE = {"tag": "single_object", "include": [{"class": "dog", "count": 1}]}
TWO = {"tag": "two_object", "include": [{"class": "dog", "count": 1}, {"class": "cat", "count": 1}]}
THREE_CATS = {"tag": "counting", "include": [{"class": "cat", "count": 3}], "exclude": [{"class": "cat", "count": 4}]}
RED_CAR = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}]}
ATTR = {"tag": "color_attr", "include": [{"class": "car", "count": 1, "color": "red"},
                                         {"class": "bench", "count": 1, "color": "blue"}]}
DOG_LEFT_OF_CAT = {"tag": "position", "include": [{"class": "cat", "count": 1},
                                                  {"class": "dog", "count": 1, "position": ["left of", 0]}]}


def test_presence_and_threshold():
    assert judge([det("dog", 0.5)], SINGLE) == rules.Verdict(True, 1.0, [], True)
    assert not judge([det("dog", 0.3)], SINGLE).correct  # strictly greater than 0.3
    v = judge([det("cat")], SINGLE)
    assert (v.correct, v.score, v.exact) == (False, 0.0, False)
    assert v.reasons[0] == "expected dog>=1, found 0"


def test_extra_objects_pass_geneval_but_cost_partial_credit():
    # official: "at least count"; Flow-GRPO: count term 1 - |1 - n| / 1, unclamped
    two = judge([det("dog"), det("dog", 0.8)], SINGLE)
    assert (two.correct, two.score, two.exact) == (True, 0.0, False)
    assert judge([det("dog")] * 3, SINGLE).score == -1.0


def test_two_objects():
    assert judge([det("dog"), det("cat")], TWO).correct
    v = judge([det("dog"), det("horse")], TWO)
    assert (v.correct, v.score) == (False, 0.5)  # terms: dog 1, cat 0


def test_counting_threshold_and_exclude():
    three = [det("cat", 0.95), det("cat", 0.93), det("cat", 0.91)]
    assert judge(three, THREE_CATS) == rules.Verdict(True, 1.0, [], True)
    # a 0.85 detection counts for presence but not for counting prompts
    assert judge(three + [det("cat", 0.85)], THREE_CATS).correct
    assert judge([det("dog", 0.85)], SINGLE).correct
    v = judge(three[:2] + [det("cat", 0.85)], THREE_CATS)
    assert (v.correct, v.score) == (False, pytest.approx(2 / 3))  # found 2 of 3
    v = judge(three + [det("cat", 0.92)], THREE_CATS)  # four cats: the exclude clause (count 4) fails
    assert (v.correct, v.score, v.exact) == (False, pytest.approx(2 / 3), False)
    assert v.reasons[0] == "expected cat<4, found 4"


def test_colours():
    assert judge([det("car", color="red")], RED_CAR) == rules.Verdict(True, 1.0, [], True)
    v = judge([det("car", color="blue")], RED_CAR)
    assert (v.correct, v.score) == (False, 0.5)  # count 1, colour 0
    v = judge([det("dog")], RED_CAR)
    assert (v.correct, v.score) == (False, 0.0)  # count 0, the missing colour term 0
    # the best car is red: official correct; Flow-GRPO: 2 cars != 1 -> count term 0 and colour 0
    v = judge([det("car", 0.9, color="red"), det("car", 0.5, color="blue")], RED_CAR)
    assert (v.correct, v.score, v.exact) == (True, 0.0, False)
    with pytest.raises(ValueError, match="colour"):
        judge([det("car")], RED_CAR)


def test_colour_targets_are_the_best_count_objects():
    objs = select([det("car", 0.5), det("car", 0.9), det("bench", 0.9)], "color_attr")
    assert rules.colour_targets(objs, ATTR) == [("car", 0), ("bench", 0)]
    assert objs["car"][0].score == 0.9
    assert rules.colour_targets(select([det("bench")], "color_attr"), ATTR) == [("bench", 0)]


def test_colour_attribution():
    assert judge([det("car", color="red"), det("bench", color="blue")], ATTR).correct
    v = judge([det("car", color="red"), det("bench", color="green")], ATTR)
    assert (v.correct, v.score) == (False, 0.75)  # terms 1, 1, 1, 0
    v = judge([det("car", color="blue"), det("bench", color="red")], ATTR)  # colours swapped
    assert (v.correct, v.score) == (False, 0.5)


def test_relative_position_margin():
    cat = (60.0, 0.0, 80.0, 20.0)  # width 20: margin 0.1 x (20 + 20) = 4 px on the x axis

    def dog(dx: float):
        return (60.0 - dx, 0.0, 80.0 - dx, 20.0)

    assert relative_position(dog(4.0), cat) == set()  # inside the margin: no relation at all
    assert relative_position(dog(7.9), cat) == set()  # (7.9 - 4) / 7.9 < 0.5
    assert relative_position(dog(8.1), cat) == {"left of"}  # (8.1 - 4) / 8.1 > 0.5
    assert relative_position(cat, dog(8.1)) == {"right of"}
    assert relative_position((0, 0, 2, 2), (30, 30, 32, 32)) == {"left of", "above"}  # a diagonal: both
    assert relative_position((0, 40, 10, 50), (0, 0, 10, 10)) == {"below"}


def test_position_verdicts():
    cat = (60, 0, 80, 20)
    inside = judge([det("cat", box=cat), det("dog", box=(51.9, 0, 71.9, 20))], DOG_LEFT_OF_CAT)
    outside = judge([det("cat", box=cat), det("dog", box=(52.1, 0, 72.1, 20))], DOG_LEFT_OF_CAT)
    assert inside == rules.Verdict(True, 1.0, [], True)  # terms: 1 | 1, 1
    # Flow-GRPO appends its 1.0 after the position loop even when it failed: terms 1 | 1, 0, 1
    assert (outside.correct, outside.score, outside.exact) == (False, 0.75, False)
    no_cat = judge([det("dog")], DOG_LEFT_OF_CAT)  # terms: 0 | 1, 0 (no target)
    assert (no_cat.correct, no_cat.score) == (False, pytest.approx(1 / 3))
    assert "no target for dog to be left of" in no_cat.reasons
    # every one of the best `count` objects must relate to the target group
    assert not judge([det("cat", box=cat), det("dog", box=(90, 0, 100, 20))], DOG_LEFT_OF_CAT).correct


def test_select_cap_order_and_nms():
    apples = [det("apple", 0.31 + i / 100) for i in range(20)]
    kept = select(apples, "single_object")["apple"]
    assert len(kept) == 16 and kept[0].score == pytest.approx(0.5) and kept[-1].score == pytest.approx(0.35)
    meta = {"tag": "two_object", "include": [{"class": "apple", "count": 1}],
            "exclude": [{"class": "apple", "count": 17}]}
    v = judge(apples, meta)
    assert v.correct and v.score == -14.0  # 16 counted (not 20): exclude 17 holds; 1 - 15
    boxes = [det("cup", 0.9, (0, 0, 9, 9)), det("cup", 0.8, (1, 0, 10, 9)), det("cup", 0.7, (50, 50, 59, 59))]
    assert len(select(boxes, "single_object")["cup"]) == 3  # max_overlap 1.0: no NMS
    nms = select(boxes, "single_object", Thresholds(max_overlap=0.5))["cup"]
    assert [d.score for d in nms] == [0.9, 0.7]
    assert rules.iou((0, 0, 9, 9), (5, 0, 14, 9)) == pytest.approx(1 / 3)  # pixel-inclusive areas 100, 100, 50


def test_thresholds_and_metadata_checks():
    assert Thresholds().confidence("counting") == 0.9 and Thresholds().lowest == 0.3
    with pytest.raises(ValueError):
        Thresholds(threshold=1.5)
    for meta in (SINGLE, TWO, THREE_CATS, RED_CAR, ATTR, DOG_LEFT_OF_CAT):
        rules.check_metadata(meta)
    bad = [{"tag": "nope", "include": [{"class": "dog", "count": 1}]},
           {"tag": "colors", "include": [{"class": "dog", "count": 1, "color": "teal"}]},
           {"tag": "position", "include": [{"class": "dog", "count": 1, "position": ["left of", 0]}]},
           {"tag": "counting", "include": [{"class": "unicorn", "count": 2}]}]
    for meta in bad:
        with pytest.raises(ValueError):
            rules.check_metadata(meta)
