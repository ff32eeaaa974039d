"""The prior baseline: what a model scores by giving every question of a kind the same answer,
chosen from the training split, without looking at the image.

:func:`prior_predictions` writes rows in the predictions format of :mod:`earthgpt.eval.inputs`, so
the prior is scored by the same runner as any model and its numbers sit beside the model's.

**Which answer.** Training turns are grouped by ``(task, sensor, question type)`` (the sensor is
named in every instruction, the question type is known from the question; the dataset is not
used, since the prompt does not name it). An evaluated turn takes the answer of its own group;
a group with no training turns backs off to ``(task, any sensor, question type)``, then to
``(task, any sensor, any type)``; a task with no training turns at all gets no answer (the runner
counts it as unanswered). Per task:

- ``classification``, ``vqa``, ``region_caption``: the most frequent training answer, answers
  compared by :func:`~earthgpt.eval.normalize.answer_key` (its most frequent spelling is written;
  ties go to the smaller key). VQA groups are per question type, so "presence" answers ``yes`` or
  ``no``, "count" the commonest count.
- ``caption``: the *consensus* caption: among the ``CAPTION_CANDIDATES`` most frequent distinct
  training captions (ties: smaller text), the one with the highest mean CIDEr-D against the
  training images' caption sets (each image one item, its captions the references, df from those
  references; at most ``CAPTION_ITEMS`` images, every k-th in record order, to bound the cost at a
  few seconds). It is the caption a blind model would do best to repeat, by the metric the task
  reports.
- ``detection_hbb`` / ``detection_obb``: one object: the training class with the most objects, at
  the mean of those objects' grid boxes (an OBB's enclosing box; written as an axis-aligned OBB for
  the OBB task). An empty answer would score 0 everywhere; one mean box is the cheapest non-trivial
  guess.
- ``grounding``: the mean training box (grid ``xyxy``; an OBB's enclosing box).

Boxes are read from the training *answers* (0–1000 grid), so the prior lives in the space the
model writes in and needs no image sizes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from earthgpt.data.mmrs_reader import RecordTurn
from earthgpt.eval.captions import cider_d, tokenize
from earthgpt.eval.inputs import EvalError, all_turns
from earthgpt.eval.normalize import answer_key
from earthgpt.eval.runner import select_turns
from earthgpt.geometry import HBB, Box, Detection
from earthgpt.textbox import format_box, format_detections, parse_detections

ANY = "*"
CAPTION_CANDIDATES = 20
CAPTION_ITEMS = 400

Key = tuple[str, str, str]


def turn_key(ref: RecordTurn, record: Mapping[str, Any]) -> Key:
    """The most specific prior group of a turn: ``(task, sensor, question type or "")``."""
    return (ref.task, str(record.get("sensor") or "optical"), str(ref.question_type or ""))


def backoff_keys(key: Key) -> list[Key]:
    """The groups tried for a turn, most specific first (module doc)."""
    task, sensor, qtype = key
    return [(task, sensor, qtype), (task, ANY, qtype), (task, ANY, ANY)]


def majority_answer(answers: Sequence[str]) -> str:
    """The most frequent answer by normalised key (ties: the smaller key), in its commonest spelling."""
    if not answers:
        raise ValueError("majority_answer needs at least one answer")
    groups: dict[str, Counter[str]] = defaultdict(Counter)
    for answer in answers:
        groups[answer_key(answer)][answer.strip()] += 1
    best = min(groups, key=lambda k: (-sum(groups[k].values()), k))
    spellings = groups[best]
    return min(spellings, key=lambda s: (-spellings[s], s))


def consensus_caption(
    caption_sets: Sequence[Sequence[str]],
    candidates: int = CAPTION_CANDIDATES,
    max_items: int = CAPTION_ITEMS,
) -> str:
    """The training caption with the best mean CIDEr-D against the training images' caption sets
    (every k-th set, at most ``max_items``), among the ``candidates`` most frequent distinct
    captions (ties: more frequent, then smaller text)."""
    sets = [[c for c in refs if c.strip()] for refs in caption_sets]
    sets = [refs for refs in sets if refs]
    if not sets:
        raise ValueError("consensus_caption needs at least one non-empty caption")
    counts = Counter(c.strip() for refs in sets for c in refs)
    shortlist = sorted(counts, key=lambda c: (-counts[c], c))[:candidates]
    step = -(-len(sets) // max_items)
    references = [[tokenize(c) for c in refs] for refs in sets[::step]]

    def mean_cider(caption: str) -> float:
        scores = cider_d([tokenize(caption)] * len(references), references)
        return sum(scores) / len(scores)

    scored = {caption: mean_cider(caption) for caption in shortlist}
    return min(shortlist, key=lambda c: (-scored[c], -counts[c], c))


def _enclosing(box: Box) -> HBB:
    return box if isinstance(box, HBB) else box.to_hbb()


def mean_box(boxes: Sequence[Box]) -> HBB:
    """The coordinate-wise mean of the boxes' enclosing ``xyxy`` (grid)."""
    if not boxes:
        raise ValueError("mean_box needs at least one box")
    hbbs = [_enclosing(b) for b in boxes]
    n = len(hbbs)
    return HBB(*(sum(getattr(b, k) for b in hbbs) / n for k in ("x1", "y1", "x2", "y2")))


def detection_prior(answers: Sequence[str], oriented: bool) -> str:
    """One object: the class with the most training objects at the mean of their boxes."""
    objects = [d for answer in answers for d in parse_detections(answer).detections]
    if not objects:
        return ""
    label = majority_answer([d.label for d in objects])
    boxes = [d.box for d in objects if answer_key(d.label) == answer_key(label)]
    box: Box = mean_box(boxes)
    if oriented:
        box = box.to_obb()
    return format_detections([Detection(label, box)])


def grounding_prior(answers: Sequence[str]) -> str:
    """The mean of the first box of every training grounding answer."""
    boxes = [found.detections[0].box for a in answers if (found := parse_detections(a)).detections]
    return format_box(mean_box(boxes)) if boxes else ""


SUMMARISERS: dict[str, Callable[[list[Any]], str]] = {
    "classification": majority_answer,
    "vqa": majority_answer,
    "region_caption": majority_answer,
    "caption": consensus_caption,
    "detection_hbb": lambda answers: detection_prior(answers, oriented=False),
    "detection_obb": lambda answers: detection_prior(answers, oriented=True),
    "grounding": grounding_prior,
}


def _training_items(train_records: Sequence[Mapping[str, Any]]) -> dict[Key, list[Any]]:
    """Training answers per group and every coarser group it backs off to; a caption item is the
    list of all caption answers of one record."""
    items: dict[Key, list[Any]] = defaultdict(list)
    captioned: set[int] = set()
    refs = all_turns(train_records)
    captions_of: dict[int, list[str]] = defaultdict(list)
    for ref in refs:
        if ref.task == "caption":
            captions_of[ref.record].append(ref.answer)
    for ref in refs:
        if ref.task == "caption":
            if ref.record in captioned:
                continue
            captioned.add(ref.record)
            item: Any = captions_of[ref.record]
        else:
            item = ref.answer
        for key in backoff_keys(turn_key(ref, train_records[ref.record])):
            items[key].append(item)
    return items


def fit_prior(
    train_records: Sequence[Mapping[str, Any]], keys: Iterable[Key] | None = None
) -> dict[Key, dict[str, Any]]:
    """The prior answer of each training group (only of ``keys`` when given):
    ``{key: {"answer": text, "n": training items}}``."""
    items = _training_items(train_records)
    wanted = set(items) if keys is None else set(keys) & set(items)
    return {key: _summary(key, items[key]) for key in sorted(wanted)}


def _summary(key: Key, items: list[Any]) -> dict[str, Any]:
    return {"answer": SUMMARISERS[key[0]](items), "n": len(items)}


def prior_predictions(
    train_records: Sequence[Mapping[str, Any]],
    eval_records: Sequence[Mapping[str, Any]],
    *,
    tasks: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """Prediction rows (``id``, ``turn``, ``task``, ``answer``, ``group``) answering every turn of
    ``eval_records`` that the runner would ask (:func:`~earthgpt.eval.runner.select_turns`) with
    the prior of its group (module doc). ``group`` names the training group used, e.g.
    ``"vqa/optical/presence"`` or ``"grounding/*/*"``."""
    if not train_records:
        raise EvalError("the prior baseline needs training records, got none")
    items = _training_items(train_records)
    prior: dict[Key, dict[str, Any]] = {}
    rows = []
    for ref in select_turns(eval_records, tasks=tasks):
        keys = backoff_keys(turn_key(ref, eval_records[ref.record]))
        key = next((k for k in keys if k in items), None)
        if key is None:
            continue
        if key not in prior:
            prior[key] = _summary(key, items[key])
        rows.append(
            {
                "id": ref.record_id,
                "turn": ref.turn,
                "task": ref.task,
                "answer": prior[key]["answer"],
                "group": "/".join(part for part in key if part),
            }
        )
    return rows


def prior_table(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """For a report: each group that answered, its answer and how many evaluated turns it answered."""
    table: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = table.setdefault(str(row["group"]), {"answer": row["answer"], "turns": 0})
        entry["turns"] += 1
    return dict(sorted(table.items()))
