"""From answered turns to metric inputs, and from those to numbers per task, sensor and source.

How each task's turns are scored (answers of other models are read with
:func:`earthgpt.box_dialects.parse_dialect`, so every dialect goes through the same metric code):

- ``classification`` / ``vqa``: the raw answer against the reference answer
  (:mod:`~earthgpt.eval.classification`, :mod:`~earthgpt.eval.vqa`; VQA by ``question_type``).
- ``caption``: one item per selected caption turn (the runner selects the first answered caption
  turn of each record): the candidate is its answer, the references are the reference answers of
  *all* caption turns of the record.
- ``region_caption``: one item per turn, its reference answer the only reference.
- ``detection_hbb`` / ``detection_obb``: one image per turn; predictions are the parsed answer,
  ground truth the parsed reference answer, both moved from the 0–1000 grid to pixels of the
  record's ``width`` × ``height``. Reference objects are paired with the record's annotations
  (``objects_hbb`` / ``objects_obb``: same label, pixel box rounding to the same grid box) to take
  their exact pixel box and VOC ``difficult`` flag; difficult annotations missing from the answer
  are added as difficult, so predictions on them are ignored rather than counted as FPs.
- ``grounding``: the first box of the parsed answer (``None`` if there is none) against the first
  box of the reference answer, in pixels.

A predicted box that is not usable (:attr:`earthgpt.textbox.ParseResult.invalid`: zero area,
corners swapped, off the image) still counts, as a miss: a prediction of its class that overlaps
nothing (:data:`MISS`). Reference answers are read as written, unusable boxes included, so the
ground truth does not depend on the check.

Every task is reported over all its items (``all``) and per ``sensor`` and per ``source``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from earthgpt.box_dialects import parse_dialect
from earthgpt.data.mmrs_reader import RecordTurn, record_turns
from earthgpt.eval.captions import caption_metrics
from earthgpt.eval.classification import classification_metrics
from earthgpt.eval.grounding import grounding_metrics
from earthgpt.eval.mean_ap import GroundTruth, detection_metrics
from earthgpt.eval.vqa import vqa_metrics
from earthgpt.geometry import HBB, Box, Detection, grid_to_pixel, obb_from_polygon8, pixel_to_grid
from earthgpt.textbox import InvalidBox, ParseResult, parse_detections

MISS = HBB(0, 0, 0, 0)
"""Where an unusable predicted box is scored: a zero-area box, IoU 0 with every box."""

ANNOTATION_KEYS = {
    "detection_hbb": ("objects_hbb", "xyxy_px"),
    "detection_obb": ("objects_obb", "corners_px"),
}


@dataclass
class Case:
    """One scored item: its groups (``sensor``, ``source``) and the metric input."""

    groups: dict[str, str]
    data: Any


@dataclass
class ParseStats:
    """How the answers of a box task parsed: answers read, answers without any box, box lines
    skipped as malformed, boxes read but not usable (scored as misses)."""

    answers: int = 0
    without_boxes: int = 0
    skipped_lines: int = 0
    invalid_boxes: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "answers": self.answers,
            "without_boxes": self.without_boxes,
            "skipped_lines": self.skipped_lines,
            "invalid_boxes": self.invalid_boxes,
        }


@dataclass
class Cases:
    """Metric inputs of every task, with parse statistics of the box tasks."""

    by_task: dict[str, list[Case]] = field(default_factory=dict)
    parse: dict[str, ParseStats] = field(default_factory=dict)

    def add(self, task: str, case: Case) -> None:
        self.by_task.setdefault(task, []).append(case)


def record_groups(record: Mapping[str, Any]) -> dict[str, str]:
    """``{"sensor", "source"}`` of a record; the source is its ``dataset`` (or a ``source`` name, or
    ``source.dataset`` when ``source`` is an object)."""
    source = record.get("source") or record.get("dataset") or "unknown"
    if isinstance(source, Mapping):
        source = source.get("dataset") or source.get("name") or "unknown"
    return {"sensor": str(record.get("sensor", "unknown")), "source": str(source)}


def _size(record: Mapping[str, Any]) -> tuple[float, float]:
    width, height = record.get("width"), record.get("height")
    if not isinstance(width, int | float) or not isinstance(height, int | float) or width <= 0 or height <= 0:
        raise ValueError(
            f"record {record.get('id')!r}: box tasks need a positive 'width' and 'height', "
            f"got {width!r} x {height!r}"
        )
    return float(width), float(height)


def _predicted(item: Detection | InvalidBox) -> Detection:
    """A box read from a prediction as scored: an unusable one as a :data:`MISS` of its class."""
    return Detection(item.label, MISS) if isinstance(item, InvalidBox) else item


def _as_written(parsed: ParseResult) -> list[Detection]:
    """Every box read from a reference answer, usable or not, in written order (the ground truth)."""
    return [Detection(item.label, item.box) for item in parsed.written()]


def _parse_answer(answer: str, dialect: str, record: Mapping[str, Any], stats: ParseStats) -> list[Detection]:
    width, height = _size(record)
    parsed = parse_dialect(answer, dialect, width=width, height=height)
    stats.answers += 1
    stats.skipped_lines += parsed.skipped
    stats.invalid_boxes += len(parsed.invalid)
    stats.without_boxes += not parsed.detections and not parsed.invalid
    return [Detection(d.label, grid_to_pixel(d.box, width, height), d.score)
            for d in map(_predicted, parsed.written())]


def _annotation_box(entry: Mapping[str, Any], coord_key: str) -> Box | None:
    values = entry.get(coord_key)
    try:
        if coord_key == "xyxy_px":
            return HBB(*values)
        return obb_from_polygon8(values)
    except (TypeError, ValueError):
        return None


def reference_objects(task: str, reference: str, record: Mapping[str, Any]) -> list[GroundTruth]:
    """Ground truth of a detection turn in pixels (rules in the module doc).

    Each object of the reference answer (grid) is paired with an annotation entry of the same label
    whose pixel box rounds to the same grid box; a paired object takes the entry's exact pixel box
    and difficult flag, an unpaired one its grid box moved to pixels. Difficult entries left unpaired
    are added as difficult objects.
    """
    width, height = _size(record)
    list_key, coord_key = ANNOTATION_KEYS[task]
    entries = []
    for entry in (record.get("annotations") or {}).get(list_key) or []:
        box = _annotation_box(entry, coord_key)
        if box is not None:
            grid = pixel_to_grid(box, width, height)
            entries.append((str(entry.get("label", "")), grid, box, bool(entry.get("difficult"))))
    used: set[int] = set()
    truths = []
    for det in _as_written(parse_detections(reference)):
        free = (i for i, e in enumerate(entries) if i not in used and (e[0], e[1]) == (det.label, det.box))
        pair = next(free, None)
        if pair is None:
            truths.append(GroundTruth(det.label, grid_to_pixel(det.box, width, height)))
            continue
        used.add(pair)
        truths.append(GroundTruth(det.label, entries[pair][2], difficult=entries[pair][3]))
    truths.extend(
        GroundTruth(label, box, difficult=True)
        for i, (label, _, box, difficult) in enumerate(entries)
        if difficult and i not in used
    )
    return truths


def _first_box(text: str, dialect: str, record: Mapping[str, Any], stats: ParseStats) -> Box | None:
    detections = _parse_answer(text, dialect, record, stats)
    return detections[0].box if detections else None


def build_cases(
    records: Sequence[Mapping[str, Any]],
    turns: Sequence[RecordTurn],
    answers: Mapping[tuple[str, int], Mapping[str, Any]],
    dialect: str,
) -> Cases:
    """Metric inputs for the answered turns (rules in the module doc). ``answers`` maps
    ``(record id, turn)`` to a prediction row (``answer``, optional ``dialect``)."""
    cases = Cases()
    for ref in turns:
        row = answers.get((ref.record_id, ref.turn))
        if row is None:
            continue
        record, answer = records[ref.record], str(row["answer"])
        groups = record_groups(record)
        row_dialect = str(row.get("dialect") or dialect)
        if ref.task == "caption":
            references = [t.answer for t in record_turns(record, ref.record) if t.task == "caption"]
            cases.add(ref.task, Case(groups, (answer, references)))
        elif ref.task in ("classification", "vqa"):
            cases.add(ref.task, Case(groups, (answer, ref.answer, ref.question_type)))
        elif ref.task == "region_caption":
            cases.add(ref.task, Case(groups, (answer, [ref.answer])))
        elif ref.task in ANNOTATION_KEYS:
            stats = cases.parse.setdefault(ref.task, ParseStats())
            predicted = _parse_answer(answer, row_dialect, record, stats)
            cases.add(ref.task, Case(groups, (predicted, reference_objects(ref.task, ref.answer, record))))
        elif ref.task == "grounding":
            stats = cases.parse.setdefault(ref.task, ParseStats())
            width, height = _size(record)
            truth = _as_written(parse_detections(ref.answer))
            if truth:
                predicted = _first_box(answer, row_dialect, record, stats)
                cases.add(ref.task, Case(groups, (predicted, grid_to_pixel(truth[0].box, width, height))))
    return cases


def _score_classification(data: list) -> dict[str, Any]:
    return classification_metrics([d[0] for d in data], [d[1] for d in data])


def _score_vqa(data: list) -> dict[str, Any]:
    return vqa_metrics([d[0] for d in data], [d[1] for d in data], [d[2] for d in data])


def _score_captions(data: list) -> dict[str, Any]:
    return caption_metrics([d[0] for d in data], [d[1] for d in data])


def _score_detection(data: list) -> dict[str, Any]:
    return detection_metrics([d[0] for d in data], [d[1] for d in data])


def _score_grounding(data: list) -> dict[str, Any]:
    return grounding_metrics([d[0] for d in data], [d[1] for d in data])


SCORERS: dict[str, Callable[[list], dict[str, Any]]] = {
    "classification": _score_classification,
    "caption": _score_captions,
    "vqa": _score_vqa,
    "detection_hbb": _score_detection,
    "detection_obb": _score_detection,
    "grounding": _score_grounding,
    "region_caption": _score_captions,
}


def score_task(task: str, cases: Sequence[Case]) -> dict[str, Any]:
    """``{"all": metrics, "by_sensor": {name: metrics}, "by_source": {name: metrics}}`` of one task."""
    scorer = SCORERS[task]
    result: dict[str, Any] = {"all": scorer([c.data for c in cases])}
    for group in ("sensor", "source"):
        names = sorted({c.groups[group] for c in cases})
        result[f"by_{group}"] = {
            name: scorer([c.data for c in cases if c.groups[group] == name]) for name in names
        }
    return result
