"""Classification, VQA and grounding metrics and the shared answer normalisation, on hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from earthgpt.eval.classification import (
    OTHER,
    accuracy,
    classification_metrics,
    confusion_matrix,
    per_class_accuracy,
)
from earthgpt.eval.grounding import grounding_metrics
from earthgpt.eval.normalize import answer_key, normalize_answer
from earthgpt.eval.vqa import vqa_match, vqa_metrics
from earthgpt.geometry import HBB, obb_from_cxcywha


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Bare_Land.", "bare land"),
        ("BareLand", "bare land"),
        ("storage-tanks", "storage tanks"),
        ("Two", "2"),
        ("twenty-one cars", "21 cars"),
        ("one hundred and five", "105"),
        ("2.5 m2", "2.5 m2"),
        ("An airport!", "airport"),
        ("A", "a"),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_answer_key_ignores_spaces() -> None:
    assert answer_key("bare land") == answer_key("Bareland") == answer_key("BareLand") == "bareland"
    assert answer_key("0 m2") == answer_key("0m2")


def test_two_by_two_confusion_matrix() -> None:
    # references f f r r r, predictions f r r r f (f = forest, r = river):
    #   ref forest -> pred forest once, pred river once  -> row forest = [1, 1]
    #   ref river  -> pred river twice, pred forest once -> row river  = [1, 2]
    refs = ["forest", "forest", "river", "river", "river"]
    preds = ["Forest", "river.", "a river", "River", "the forest"]
    matrix, labels = confusion_matrix(preds, refs)
    assert labels == ["forest", "river"]
    np.testing.assert_array_equal(matrix, [[1, 1], [1, 2]])
    assert accuracy(preds, refs) == pytest.approx(3 / 5)
    assert per_class_accuracy(preds, refs) == pytest.approx({"forest": 1 / 2, "river": 2 / 3})


def test_confusion_matrix_has_other_column_for_unknown_answers() -> None:
    matrix, labels = confusion_matrix(["forest", "I cannot tell"], ["forest", "river"])
    assert labels == ["forest", "river", OTHER]
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [0, 0, 1], [0, 0, 0]])


def test_classification_metrics_json_ready_and_empty() -> None:
    result = classification_metrics(["Forest"], ["forest"])
    assert result["accuracy"] == 1.0 and result["n"] == 1
    assert result["confusion_matrix"] == {"labels": ["forest"], "matrix": [[1]]}
    assert math.isnan(accuracy([], []))
    with pytest.raises(ValueError, match="2 predictions and 1 references"):
        accuracy(["a", "b"], ["a"])


def test_vqa_match_rules() -> None:
    assert vqa_match("Two.", "2")
    assert vqa_match("Yes, there is a road.", "yes")
    assert not vqa_match("no yes", "yes")
    assert vqa_match("0 m2", "0m2")
    assert not vqa_match("", "yes")
    assert not vqa_match("3", "2")


def test_vqa_metrics_per_type() -> None:
    preds = ["yes", "no", "3", "rural"]
    refs = ["yes", "yes", "3", "urban"]
    types = ["presence", "presence", "count", None]
    result = vqa_metrics(preds, refs, types)
    assert result["accuracy"] == pytest.approx(2 / 4)
    assert result["per_type"] == {
        "count": {"accuracy": 1.0, "n": 1},
        "presence": {"accuracy": 0.5, "n": 2},
        "unknown": {"accuracy": 0.0, "n": 1},
    }
    assert result["average_accuracy"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)


def test_grounding_acc_and_mean_iou() -> None:
    # IoUs: identical box 1.0; [0,0,10,10] vs [5,0,15,10]: 50 / 150 = 1/3; missing answer 0.
    refs = [HBB(0, 0, 10, 10), HBB(0, 0, 10, 10), HBB(0, 0, 10, 10)]
    preds = [HBB(0, 0, 10, 10), HBB(5, 0, 15, 10), None]
    result = grounding_metrics(preds, refs)
    assert result["acc@0.5"] == pytest.approx(1 / 3)
    assert result["mean_iou"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert result["parsed"] == pytest.approx(2 / 3)


def test_grounding_with_oriented_boxes() -> None:
    box = obb_from_cxcywha(50, 50, 40, 10, 30)
    result = grounding_metrics([box], [box])
    assert result["acc@0.5"] == 1.0 and result["mean_iou"] == pytest.approx(1.0)
