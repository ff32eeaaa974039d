"""VQA metrics: exact-match accuracy after normalisation, overall and per question type.

An answer is correct when :func:`vqa_match` holds:

- both sides go through :func:`~earthgpt.eval.normalize.answer_key` (lower case, punctuation,
  articles and spaces removed, number words as digits: ``"Two."`` matches ``"2"``);
- yes/no: when the reference is ``yes`` or ``no``, the prediction's first normalised word decides
  (``"Yes, there is a road."`` counts as ``yes``), since models often justify a yes/no answer;
- otherwise the keys must be equal (RSVQA areas such as ``"0m2"`` match ``"0 m2"``).

The overall accuracy is the mean over all questions (not the mean of the per-type accuracies,
which is reported separately as ``average_accuracy``, the RSVQA papers' "AA").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from earthgpt.eval.normalize import answer_key, normalize_answer

YES_NO = frozenset({"yes", "no"})


def vqa_match(prediction: str, reference: str) -> bool:
    """Whether a predicted short answer matches the reference answer (rules in the module doc)."""
    ref = answer_key(reference)
    if ref in YES_NO:
        words = normalize_answer(prediction).split()
        return bool(words) and words[0] == ref
    return answer_key(prediction) == ref


def vqa_metrics(
    predictions: Sequence[str], references: Sequence[str], question_types: Sequence[str | None] | None = None
) -> dict[str, Any]:
    """Overall accuracy, per-question-type accuracy and their mean (AA).

    ``question_types`` gives each question's type (``None`` or missing → ``"unknown"``).
    Returns ``{"accuracy", "average_accuracy", "per_type": {type: {"accuracy", "n"}}, "n"}``;
    accuracies are ``nan`` when there are no questions.
    """
    n = len(references)
    if len(predictions) != n:
        raise ValueError(f"expected {n} predictions (one per reference), got {len(predictions)}")
    types = list(question_types) if question_types is not None else [None] * n
    if len(types) != n:
        raise ValueError(f"expected {n} question types (one per reference), got {len(types)}")
    hits: dict[str, list[bool]] = {}
    for pred, ref, qtype in zip(predictions, references, types, strict=True):
        hits.setdefault(qtype or "unknown", []).append(vqa_match(pred, ref))
    per_type = {t: {"accuracy": sum(h) / len(h), "n": len(h)} for t, h in sorted(hits.items())}
    total = sum(sum(h) for h in hits.values())
    nan = float("nan")
    type_accuracies = [v["accuracy"] for v in per_type.values()]
    return {
        "accuracy": total / n if n else nan,
        "average_accuracy": sum(type_accuracies) / len(type_accuracies) if type_accuracies else nan,
        "per_type": per_type,
        "n": n,
    }
