"""Detection AP/mAP: a hand-worked case, the no-score rule, difficult boxes, and cross-checks
against pycocotools (HBB) and between HBB and HBB-shaped OBB boxes."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest

from earthgpt.eval.mean_ap import GroundTruth, average_precision, detection_metrics
from earthgpt.geometry import HBB, Detection

G1, G2, G3 = HBB(0, 0, 10, 10), HBB(20, 0, 30, 10), HBB(40, 0, 50, 10)
THREE_CARS = [GroundTruth("car", G1), GroundTruth("car", G2), GroundTruth("car", G3)]
FOUR_PREDICTIONS = [
    Detection("car", G1, 0.9),  # TP (IoU 1 with G1)
    Detection("car", HBB(100, 100, 110, 110), 0.8),  # FP (overlaps nothing)
    Detection("car", G2, 0.7),  # TP (IoU 1 with G2)
    Detection("car", HBB(1, 0, 11, 10), 0.6),  # FP: best IoU 90/110 with G1, already claimed
]


def test_three_box_map_by_hand() -> None:
    # cumulative TP 1 1 2 2, FP 0 1 1 2 over 3 positives (G3 is missed):
    # recall    1/3  1/3  2/3  2/3
    # precision 1    1/2  2/3  1/2   -> interpolated (max to the right): 1, 2/3, 2/3, 1/2
    # all-point AP = (1/3 - 0) * 1 + (2/3 - 1/3) * 2/3 = 1/3 + 2/9 = 5/9
    result = detection_metrics([FOUR_PREDICTIONS], [THREE_CARS])
    assert result["per_class"]["car"]["ap"] == pytest.approx(5 / 9)
    assert result["map"] == pytest.approx(5 / 9)
    assert result["per_class"]["car"]["precision"] == pytest.approx(1 / 2)
    assert result["per_class"]["car"]["recall"] == pytest.approx(2 / 3)
    # 101-point: levels 0.00..0.33 (34 levels) -> 1, 0.34..0.66 (33 levels) -> 2/3, the rest -> 0
    coco = detection_metrics([FOUR_PREDICTIONS], [THREE_CARS], interpolation="coco101")
    assert coco["map"] == pytest.approx((34 + 33 * 2 / 3) / 101)


def test_without_scores_ap_is_precision_times_recall() -> None:
    # all four predictions tie at score 1.0: one operating point, 2 TP / 4 predictions, 2 of 3 found
    unscored = [Detection(d.label, d.box) for d in FOUR_PREDICTIONS]
    result = detection_metrics([unscored], [THREE_CARS])
    assert result["map"] == pytest.approx((2 / 4) * (2 / 3))
    reordered = detection_metrics([unscored[::-1]], [THREE_CARS])
    assert reordered["map"] == result["map"]


def test_difficult_objects_are_ignored() -> None:
    # ship A is difficult: the prediction on it is neither TP nor FP, and A is no positive.
    ships = [
        GroundTruth("Ship", HBB(0, 50, 10, 60), difficult=True),
        GroundTruth("ship", HBB(20, 50, 30, 60)),
    ]
    preds = [Detection("ship", HBB(0, 50, 10, 60), 0.9), Detection("ship", HBB(20, 50, 30, 60), 0.8)]
    result = detection_metrics([preds + FOUR_PREDICTIONS], [ships + THREE_CARS])
    assert result["per_class"]["ship"] == {"ap": 1.0, "ap_voc07": 1.0, "precision": 1.0, "recall": 1.0,
                                           "n_gt": 1, "n_pred": 2}
    assert result["map"] == pytest.approx((1.0 + 5 / 9) / 2)


def test_unknown_labels_empty_predictions_and_mismatch() -> None:
    result = detection_metrics([[Detection("dragon", G1, 0.5)], []], [THREE_CARS, []])
    assert result["map"] == 0.0 and result["unmatched_labels"] == 1
    assert math.isnan(detection_metrics([[]], [[]])["map"])
    assert average_precision(np.zeros(0), np.zeros(0)) == 0.0
    with pytest.raises(ValueError, match="one prediction list per image"):
        detection_metrics([[]], [])


def _random_case(seed: int) -> tuple[list[list[Detection]], list[list[GroundTruth]]]:
    """Images with ground truth on a 100-px lattice and jittered / spurious predictions.

    Each box stays inside its own lattice cell, so a prediction overlaps at most one ground-truth
    box: VOC's and COCO's matching rules then agree and only the interpolation differs.
    """
    rng = np.random.default_rng(seed)
    classes = ["car", "plane", "ship"]
    preds, truths = [], []
    for _ in range(6):
        cells = rng.permutation(25)[:12]
        gts, dets = [], []
        for n, cell in enumerate(cells):
            x0, y0 = 100 * (cell % 5) + 20, 100 * (cell // 5) + 20
            w, h = rng.uniform(20, 60, size=2)
            box = HBB(x0, y0, x0 + w, y0 + h)
            label = classes[rng.integers(3)]
            if n < 8:
                gts.append(GroundTruth(label, box))
            for _ in range(rng.integers(0, 3)):
                jx, jy = rng.uniform(-0.3, 0.3, size=2) * (w, h)
                guess = label if rng.random() < 0.85 else classes[rng.integers(3)]
                dets.append(Detection(guess, HBB(x0 + jx, y0 + jy, x0 + jx + w, y0 + jy + h), rng.random()))
        preds.append(dets)
        truths.append(gts)
    return preds, truths


def _pycocotools_ap50(preds: list[list[Detection]], truths: list[list[GroundTruth]]) -> dict[str, float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = sorted({g.label for gts in truths for g in gts})
    cat = {name: i + 1 for i, name in enumerate(names)}

    def xywh(b: HBB) -> list[float]:
        return [b.x1, b.y1, b.width, b.height]

    annotations = []
    for i, gts in enumerate(truths):
        for g in gts:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": cat[g.label],
                    "bbox": xywh(g.box),
                    "area": g.box.area,
                    "iscrowd": 0,
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": [{"id": i} for i in range(len(truths))],
            "annotations": annotations,
            "categories": [{"id": c, "name": n} for n, c in cat.items()],
        }
        gt.createIndex()
        dt = gt.loadRes(
            [
                {"image_id": i, "category_id": cat[d.label], "bbox": xywh(d.box), "score": d.score}
                for i, dets in enumerate(preds)
                for d in dets
            ]
        )
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"]  # [iou, recall, class, area, max_dets]
    return {n: float(np.mean(precision[0, :, cat[n] - 1, 0, -1])) for n in names}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hbb_ap_matches_pycocotools_101_point(seed: int) -> None:
    preds, truths = _random_case(seed)
    ours = detection_metrics(preds, truths, interpolation="coco101")["per_class"]
    expected = _pycocotools_ap50(preds, truths)
    assert set(ours) == set(expected)
    for name, ap in expected.items():
        assert ours[name]["ap"] == pytest.approx(ap, abs=1e-9), name
    assert 0.2 < np.mean(list(expected.values())) < 0.95  # neither trivial nor empty


@pytest.mark.parametrize("interpolation", ["voc", "coco101"])
def test_obb_map_equals_hbb_map_on_hbb_shaped_boxes(interpolation: str) -> None:
    preds, truths = _random_case(3)
    obb_preds = [[Detection(d.label, d.box.to_obb(), d.score) for d in dets] for dets in preds]
    obb_truths = [[GroundTruth(g.label, g.box.to_obb(), g.difficult) for g in gts] for gts in truths]
    hbb = detection_metrics(preds, truths, interpolation=interpolation)
    obb = detection_metrics(obb_preds, obb_truths, interpolation=interpolation)
    assert obb["map"] == pytest.approx(hbb["map"], abs=1e-9)
    for name, values in hbb["per_class"].items():
        assert obb["per_class"][name]["ap"] == pytest.approx(values["ap"], abs=1e-9)


def _devkit_voc07_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """The DOTA devkit's ``voc_ap(rec, prec, use_07_metric=True)``, written out as it is there."""
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        p = 0.0 if np.sum(recall >= t) == 0 else float(np.max(precision[recall >= t]))
        ap += p / 11.0
    return ap


def test_voc07_eleven_point_ap_matches_the_dota_devkit() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = int(rng.integers(1, 30))
        recall = np.sort(rng.uniform(0, 1, n))
        precision = rng.uniform(0, 1, n)
        expected = _devkit_voc07_ap(recall, precision)
        assert average_precision(recall, precision, "voc07") == pytest.approx(expected)
    result = detection_metrics([FOUR_PREDICTIONS], [THREE_CARS])
    assert result["map_voc07"] == pytest.approx(result["per_class"]["car"]["ap_voc07"])
    assert result["interpolation"] == "voc"
