"""Visual-grounding metrics: Acc@0.5 and mean IoU between one predicted and one reference box.

For each referring expression ``i`` with reference box ``g_i`` and predicted box ``p_i`` (in the
same space; the runner uses pixels of the image), ``IoU_i = iou(p_i, g_i)`` from
:func:`earthgpt.geometry.iou` (exact for two HBBs, polygon IoU when either is an OBB). A missing
or unparseable prediction has ``IoU_i = 0``.

- **Acc@τ** = ``#{i : IoU_i ≥ τ} / n`` with ``τ = 0.5``;
- **mean IoU** = ``Σ_i IoU_i / n``;
- ``parsed`` is the fraction of answers from which a box could be read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from earthgpt.geometry import Box, iou


def grounding_ious(predictions: Sequence[Box | None], references: Sequence[Box]) -> list[float]:
    """IoU of each predicted box with its reference box; 0 where the prediction is ``None``."""
    if len(predictions) != len(references):
        raise ValueError(
            f"expected one predicted box (or None) per reference box, got {len(predictions)} "
            f"predictions and {len(references)} references"
        )
    return [0.0 if p is None else iou(p, g) for p, g in zip(predictions, references, strict=True)]


def grounding_metrics(
    predictions: Sequence[Box | None], references: Sequence[Box], *, threshold: float = 0.5
) -> dict[str, Any]:
    """``{"acc@0.5", "mean_iou", "parsed", "n"}`` (definitions in the module doc; ``nan`` when n = 0)."""
    ious = grounding_ious(predictions, references)
    n = len(ious)
    nan = float("nan")
    return {
        f"acc@{threshold:g}": sum(v >= threshold for v in ious) / n if n else nan,
        "mean_iou": sum(ious) / n if n else nan,
        "parsed": sum(p is not None for p in predictions) / n if n else nan,
        "n": n,
    }
