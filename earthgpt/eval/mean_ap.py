"""Object-detection metrics: per-class AP and mAP at IoU 0.5, for horizontal and oriented boxes.

Definitions (one class at a time, over all images of the evaluated set):

- **IoU** is :func:`earthgpt.geometry.iou_matrix`: exact box arithmetic when both boxes are HBBs,
  polygon IoU (shapely) when either is an OBB. Coordinates are continuous (no VOC "+1 pixel").
  Predictions and ground truth must be in the same space (the runner uses pixels of the image).
- **Matching** (PASCAL VOC): predictions are visited by descending score; each one takes the
  ground-truth box of its image and class with the highest IoU. If that IoU is ≥ the threshold
  (0.5): a *difficult* ground truth makes the prediction ignored (neither TP nor FP, as in VOC);
  an unclaimed one makes it a TP and claims it; an already claimed one makes it a FP.
  Otherwise the prediction is a FP. Difficult boxes do not count among the positives.
- **Scores**: a prediction without a score (LLM answers have none) gets 1.0. Predictions with
  equal scores form *one* operating point of the precision/recall curve (ties are not broken by
  list order), so with no confidence at all the curve has a single point ``(R, P)`` and
  **AP = P · R**: a precision/recall summary, not a ranking quality.
- **AP, all-point interpolation** (VOC2010+, default): with ``p_interp(r) = max_{r' ≥ r} p(r')``,
  ``AP = Σ_i (r_i − r_{i−1}) · p_interp(r_i)`` over the recall levels of the curve.
  ``interpolation="coco101"`` instead averages ``p_interp`` at the 101 recall levels 0, 0.01, …, 1
  (the first curve point with recall ≥ the level; 0 beyond the last recall), which is what
  pycocotools' COCOeval reports at IoU 0.5 (tests cross-check the two). ``"voc07"`` averages it
  at the 11 levels 0, 0.1, …, 1 (VOC2007's 11-point AP, the DOTA devkit's default report); every
  result also carries it as ``map_voc07`` / ``ap_voc07`` beside the chosen interpolation.
- **mAP** is the mean AP over the classes that have at least one non-difficult ground-truth box.
  Predicted labels that match no such class are counted in ``unmatched_labels`` and otherwise
  ignored. Labels are compared by :func:`~earthgpt.eval.normalize.answer_key`
  (``"small-vehicle"`` = ``"Small vehicle"``); plurals are not merged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from earthgpt.eval.normalize import answer_key, normalize_answer
from earthgpt.geometry import Box, Detection, iou_matrix

Interpolation = Literal["voc", "voc07", "coco101"]
INTERPOLATIONS = ("voc", "voc07", "coco101")


@dataclass(frozen=True)
class GroundTruth:
    """One annotated object: class name, box (same space as the predictions), VOC difficult flag."""

    label: str
    box: Box
    difficult: bool = False


def average_precision(
    recall: np.ndarray, precision: np.ndarray, interpolation: Interpolation = "voc"
) -> float:
    """AP of a precision/recall curve given as points in order of decreasing score threshold.

    ``"voc"``: all-point interpolated area; ``"voc07"``: mean of the interpolated precision at the
    11 recall levels 0, 0.1, …, 1 (VOC2007, the DOTA devkit's default); ``"coco101"``: the same at
    101 recall levels (definitions in the module doc). An empty curve gives 0.
    """
    recall = np.asarray(recall, dtype=float)
    precision = np.asarray(precision, dtype=float)
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if recall.size == 0:
        return 0.0
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    if interpolation in ("voc07", "coco101"):
        levels = np.linspace(0.0, 1.0, 11 if interpolation == "voc07" else 101)
        index = np.searchsorted(recall, levels, side="left")
        padded = np.append(envelope, 0.0)
        return float(np.mean(padded[index]))
    steps = np.diff(np.concatenate(([0.0], recall)))
    return float(np.sum(steps * envelope))


def _match_class(
    predictions: Sequence[Sequence[Detection]],
    truths: Sequence[Sequence[GroundTruth]],
    iou_threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and TP flags (1 TP, 0 FP) of one class's non-ignored predictions, by descending score."""
    entries = []  # (score, image, index in image)
    for image, dets in enumerate(predictions):
        entries.extend((1.0 if d.score is None else float(d.score), image, k) for k, d in enumerate(dets))
    entries.sort(key=lambda e: -e[0])
    overlaps = [
        iou_matrix([d.box for d in dets], [g.box for g in gts]) if dets and gts else None
        for dets, gts in zip(predictions, truths, strict=True)
    ]
    claimed = [np.zeros(len(g), dtype=bool) for g in truths]
    scores, flags = [], []
    for score, image, k in entries:
        best, hit = -1, 0.0
        if overlaps[image] is not None:
            best = int(np.argmax(overlaps[image][k]))
            hit = float(overlaps[image][k, best])
        if hit >= iou_threshold and best >= 0:
            if truths[image][best].difficult:
                continue
            is_tp = not claimed[image][best]
            claimed[image][best] = True
        else:
            is_tp = False
        scores.append(score)
        flags.append(is_tp)
    return np.array(scores, dtype=float), np.array(flags, dtype=bool)


def pr_curve(scores: np.ndarray, flags: np.ndarray, n_positives: int) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision at each distinct score threshold (ties form one point), high to low."""
    if scores.size == 0 or n_positives == 0:
        return np.zeros(0), np.zeros(0)
    tp = np.cumsum(flags)
    fp = np.cumsum(~flags)
    last_of_tie = np.append(scores[1:] != scores[:-1], True)
    tp, fp = tp[last_of_tie], fp[last_of_tie]
    return tp / n_positives, tp / (tp + fp)


def _check_images(predictions: Sequence, truths: Sequence) -> None:
    if len(predictions) != len(truths):
        raise ValueError(
            f"expected one prediction list per image, got {len(predictions)} prediction lists "
            f"for {len(truths)} images"
        )


def detection_metrics(
    predictions: Sequence[Sequence[Detection]],
    ground_truths: Sequence[Sequence[GroundTruth]],
    *,
    iou_threshold: float = 0.5,
    interpolation: Interpolation = "voc",
) -> dict[str, Any]:
    """Per-class AP and mAP over a set of images (definitions in the module doc).

    ``predictions[i]`` and ``ground_truths[i]`` belong to image ``i``. Returns
    ``{"map", "map_voc07", "per_class": {name: {"ap", "ap_voc07", "precision", "recall", "n_gt",
    "n_pred"}},
    "unmatched_labels", "n_images", "iou_threshold", "interpolation"}``; ``precision`` and
    ``recall`` are taken with every prediction kept; ``map`` is ``nan`` with no positives.
    """
    _check_images(predictions, ground_truths)
    names: dict[str, str] = {}
    for gts in ground_truths:
        for g in gts:
            if not g.difficult:
                names.setdefault(answer_key(g.label), normalize_answer(g.label))
    per_class: dict[str, dict[str, float | int]] = {}
    for key in sorted(names, key=lambda k: names[k]):
        preds_c = [[d for d in dets if answer_key(d.label) == key] for dets in predictions]
        gts_c = [[g for g in gts if answer_key(g.label) == key] for gts in ground_truths]
        n_pos = sum(not g.difficult for gts in gts_c for g in gts)
        scores, flags = _match_class(preds_c, gts_c, iou_threshold)
        recall, precision = pr_curve(scores, flags, n_pos)
        per_class[names[key]] = {
            "ap": average_precision(recall, precision, interpolation),
            "ap_voc07": average_precision(recall, precision, "voc07"),
            "precision": float(precision[-1]) if precision.size else 0.0,
            "recall": float(recall[-1]) if recall.size else 0.0,
            "n_gt": n_pos,
            "n_pred": sum(len(p) for p in preds_c),
        }
    unmatched = sum(answer_key(d.label) not in names for dets in predictions for d in dets)
    aps = [c["ap"] for c in per_class.values()]
    aps07 = [c["ap_voc07"] for c in per_class.values()]
    return {
        "map": float(np.mean(aps)) if aps else float("nan"),
        "map_voc07": float(np.mean(aps07)) if aps07 else float("nan"),
        "per_class": per_class,
        "unmatched_labels": unmatched,
        "n_images": len(ground_truths),
        "iou_threshold": iou_threshold,
        "interpolation": interpolation,
    }
