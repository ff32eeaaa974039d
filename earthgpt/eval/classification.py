"""Scene-classification metrics: top-1 accuracy, per-class accuracy, confusion matrix.

A prediction is correct when its :func:`~earthgpt.eval.normalize.answer_key` equals the key of the
ground-truth class name (see :mod:`earthgpt.eval.normalize` for the exact normalisation). The model
answers in free text, so there is one answer per image and "top-1" is that answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from earthgpt.eval.normalize import answer_key, normalize_answer

OTHER = "(other)"


def _check_lengths(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"expected as many predictions as references, got {len(predictions)} predictions "
            f"and {len(references)} references"
        )


def accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Top-1 accuracy: ``#{i : key(pred_i) == key(ref_i)} / n``; ``nan`` when ``n == 0``."""
    _check_lengths(predictions, references)
    if not references:
        return float("nan")
    hits = sum(answer_key(p) == answer_key(r) for p, r in zip(predictions, references, strict=True))
    return hits / len(references)


def class_names(references: Sequence[str]) -> list[str]:
    """The sorted, de-duplicated class names of ``references`` in their normalised display form.

    Names with the same :func:`answer_key` collapse to the first display form in sorted order.
    """
    by_key: dict[str, str] = {}
    for name in sorted(normalize_answer(r) for r in references):
        by_key.setdefault(answer_key(name), name)
    return sorted(by_key.values())


def per_class_accuracy(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Recall of each ground-truth class: ``#{correct with ref == c} / #{ref == c}``.

    Keys are the normalised class names of :func:`class_names`.
    """
    _check_lengths(predictions, references)
    names = class_names(references)
    key_to_name = {answer_key(n): n for n in names}
    hits = dict.fromkeys(names, 0)
    totals = dict.fromkeys(names, 0)
    for p, r in zip(predictions, references, strict=True):
        name = key_to_name[answer_key(r)]
        totals[name] += 1
        hits[name] += answer_key(p) == answer_key(r)
    return {n: hits[n] / totals[n] for n in names}


def confusion_matrix(
    predictions: Sequence[str], references: Sequence[str], labels: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Counts ``M[i, j]`` = number of samples whose reference is ``labels[i]`` and prediction ``labels[j]``.

    ``labels`` defaults to :func:`class_names` of the references. A prediction (or a reference)
    whose key is not among the labels is counted in an extra last row/column named ``"(other)"``,
    which is added only when needed. Returns ``(matrix, labels)`` with ``matrix`` of dtype int64.
    """
    _check_lengths(predictions, references)
    names = list(labels) if labels is not None else class_names(references)
    index = {answer_key(n): i for i, n in enumerate(names)}
    pairs = [
        (index.get(answer_key(r), len(names)), index.get(answer_key(p), len(names)))
        for p, r in zip(predictions, references, strict=True)
    ]
    needs_other = any(i == len(names) or j == len(names) for i, j in pairs)
    size = len(names) + int(needs_other)
    matrix = np.zeros((size, size), dtype=np.int64)
    for i, j in pairs:
        matrix[i, j] += 1
    return matrix, [*names, OTHER] if needs_other else names


def classification_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """All classification numbers as a JSON-ready dict: accuracy, per-class accuracy, confusion matrix."""
    matrix, labels = confusion_matrix(predictions, references)
    return {
        "accuracy": accuracy(predictions, references),
        "per_class_accuracy": per_class_accuracy(predictions, references),
        "confusion_matrix": {"labels": labels, "matrix": matrix.tolist()},
        "n": len(references),
    }
