"""The shape of a record's ``annotations`` (``docs/MMRS.md``), checked before turns are written
from them: the one check for annotations that come from outside (``earthgpt mmrs build --source
mmrs=…``), whose converters did not make them.

:func:`check_annotations` names the first field that does not fit and says what it expected
(``"objects_hbb[2].xyxy_px: expected 4 numbers, got 3"``), so a record with a box of three
numbers, text where a list belongs, a polygon of five numbers or a box with ``x1 > x2`` is a
counted skip naming its field, never an exception from the turn writers. Keys the schema does not
name (``provenance``) are kept as they are and not looked at.
"""

from __future__ import annotations

import math
import re
from typing import Any

from earthgpt.tasks import Task

BOX_NUMBERS = {"xyxy_px": 4, "corners_px": 8}
"""How many numbers each pixel box field holds."""


class AnnotationError(ValueError):
    """One malformed annotation: ``field`` is its path (``objects_hbb[2].xyxy_px``), ``key`` the
    annotation it is in (``objects_hbb``)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.key = field, re.split(r"[\[.]", field)[0]


def _kind(value: Any) -> str:
    """A JSON value's kind as a reader of the file names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    return "a list" if isinstance(value, list) else "an object"


def _text(value: Any, field: str, *, one_line: bool = False, label: bool = False,
          phrase: bool = False) -> None:
    """Text that is not blank; ``one_line``: a single line; ``label``: a class name (one line, no
    brackets); ``phrase``: one line with words once full stops are taken off."""
    if not isinstance(value, str):
        raise AnnotationError(field, f"expected text, got {_kind(value)}")
    if not (value.replace(".", "").strip() if phrase else value.strip()):
        raise AnnotationError(field, f"expected words, got {value[:40]!r}")
    if (one_line or label or phrase) and len(value.strip().splitlines()) != 1:
        raise AnnotationError(field, "expected one line of text")
    if label and ("[" in value or "]" in value):
        raise AnnotationError(field, f"a class name cannot hold brackets, got {value[:40]!r}")


def _items(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise AnnotationError(field, f"expected a list, got {_kind(value)}")
    return value


def _entry(value: Any, field: str, required: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise AnnotationError(field, f"expected an object, got {_kind(value)}")
    missing = [key for key in required if key not in value]
    if missing:
        raise AnnotationError(field, f"missing {', '.join(missing)}")
    return value


def _box(value: Any, field: str, name: str) -> None:
    """``xyxy_px`` (4 finite numbers, x1 <= x2, y1 <= y2) or ``corners_px`` (8 finite numbers)."""
    numbers = _items(value, field)
    if len(numbers) != BOX_NUMBERS[name]:
        raise AnnotationError(field, f"expected {BOX_NUMBERS[name]} numbers, got {len(numbers)}")
    for index, number in enumerate(numbers):
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise AnnotationError(f"{field}[{index}]", f"expected a number, got {_kind(number)}")
        try:
            finite = math.isfinite(number)
        except OverflowError:  # an integer beyond any float
            finite = False
        if not finite:
            shown = f"{number:.3g}" if isinstance(number, float) else f"{len(str(number))} digits"
            raise AnnotationError(f"{field}[{index}]", f"expected a finite pixel coordinate, got {shown}")
    if name == "xyxy_px" and (numbers[0] > numbers[2] or numbers[1] > numbers[3]):
        raise AnnotationError(field, f"expected x1 <= x2 and y1 <= y2, got {numbers}")


def _objects(value: Any, key: str, box: str) -> None:
    for index, entry in enumerate(_items(value, key)):
        where = f"{key}[{index}]"
        entry = _entry(entry, where, ("label", box))
        _text(entry["label"], f"{where}.label", label=True)
        _box(entry[box], f"{where}.{box}", box)
        difficult = entry.get("difficult", False)
        if not isinstance(difficult, bool):
            raise AnnotationError(f"{where}.difficult", f"expected true/false, got {_kind(difficult)}")


def _qa(value: Any) -> None:
    for index, entry in enumerate(_items(value, "qa")):
        entry = _entry(entry, f"qa[{index}]", ("question", "answer", "type"))
        _text(entry["question"], f"qa[{index}].question", one_line=True)
        _text(entry["answer"], f"qa[{index}].answer")
        _text(entry["type"], f"qa[{index}].type", one_line=True)


def _referring(value: Any) -> None:
    for index, entry in enumerate(_items(value, "referring")):
        entry = _entry(entry, f"referring[{index}]", ("expression", "xyxy_px"))
        _text(entry["expression"], f"referring[{index}].expression", phrase=True)
        _box(entry["xyxy_px"], f"referring[{index}].xyxy_px", "xyxy_px")
        if "label" in entry:
            _text(entry["label"], f"referring[{index}].label", one_line=True)


def _dialogue(annotations: dict[str, Any]) -> None:
    task = annotations.get("dialogue_task", Task.caption)
    if not isinstance(task, str) or task not in list(Task):
        raise AnnotationError("dialogue_task", f"expected one of {', '.join(Task)}, got {task!r}")
    for index, entry in enumerate(_items(annotations.get("dialogue", []), "dialogue")):
        entry = _entry(entry, f"dialogue[{index}]", ("human", "assistant"))
        _text(entry["human"], f"dialogue[{index}].human")
        _text(entry["assistant"], f"dialogue[{index}].assistant")


def check_annotations(annotations: Any) -> None:
    """Raise :class:`AnnotationError` at the first field of ``annotations`` that does not fit the
    schema of ``docs/MMRS.md``; return when every field the turn writers read fits."""
    if not isinstance(annotations, dict):
        raise AnnotationError("annotations", f"expected an object, got {_kind(annotations)}")
    if "class" in annotations:
        _text(annotations["class"], "class", one_line=True)
    for index, caption in enumerate(_items(annotations.get("captions", []), "captions")):
        _text(caption, f"captions[{index}]")
    _qa(annotations.get("qa", []))
    _objects(annotations.get("objects_hbb", []), "objects_hbb", "xyxy_px")
    _objects(annotations.get("objects_obb", []), "objects_obb", "corners_px")
    _referring(annotations.get("referring", []))
    _dialogue(annotations)

