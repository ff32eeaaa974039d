"""Boxes and labels ↔ text in the canonical EarthGPT grammar (other models' dialects: box_dialects.py).

Canonical grammar (docs/FORMATS.md): integer coordinates on the 0–1000 grid, an HBB written
``[x1, y1, x2, y2]``, an OBB ``[x1, y1, x2, y2, x3, y3, x4, y4]`` in the paper's corner order, and a
detection answer one object per line, ``class name [x1, y1, x2, y2]``. Parsing is the exact
inverse of formatting and never raises on model output: a line it cannot read is skipped and
counted. Numbers outside 0–1000 are clamped to the grid and decimals are rounded. A box that reads
but is not usable (zero area, corners swapped, wholly off the image:
:func:`earthgpt.box_checks.box_problem`) is reported in :attr:`ParseResult.invalid`, never among
the detections.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from earthgpt.box_checks import OFF_IMAGE, box_problem, order_problem
from earthgpt.geometry import (
    GRID,
    HBB,
    OBB,
    Box,
    Detection,
    obb_from_corners,
    obb_from_cxcywha,
    obb_from_polygon8,
)

NUMBER = r"[-+]?\d+(?:\.\d+)?"
"""A number as models write it (the regular expression every box reader uses)."""
_BRACKETS_RE = re.compile(r"\[([^\[\]]*)\]")
_LINE_RE = re.compile(r"^(?P<label>[^\[\]]*)\[(?P<body>[^\[\]]*)\]")


@dataclass(frozen=True)
class InvalidBox:
    """A box the text wrote that is not usable: reported to the user, never drawn, mapped,
    exported or counted as a detection."""

    index: int
    """Its place among all the boxes the text wrote, usable or not, from 0."""
    label: str
    text: str
    """The box as written, e.g. ``[161, 161, 161, 161]``."""
    reason: str
    """Why it is not usable (:func:`earthgpt.box_checks.box_problem`): ``zero area``, ``x1 > x2``, …"""
    box: Box
    """The box as read (corners sorted, clamped to the grid), only for code that must still count
    it, such as eval's ground truth."""


@dataclass
class ParseResult:
    """What a parser read: the detections (usable grid boxes), the boxes it read but found
    unusable, how many candidates it skipped as malformed, and how many candidates it saw
    (non-blank lines for the canonical grammar, box openings for the other dialects)."""

    detections: list[Detection] = field(default_factory=list)
    skipped: int = 0
    raw_lines: int = 0
    invalid: list[InvalidBox] = field(default_factory=list)

    def add(self, label: str, read: tuple[Box, str | None], text: str) -> None:
        """Keep a box read from ``text``: a detection when usable, else an :class:`InvalidBox`."""
        box, problem = read
        if problem is None:
            self.detections.append(Detection(label, box))
        else:
            index = len(self.detections) + len(self.invalid)
            self.invalid.append(InvalidBox(index, label, " ".join(text.split()), problem, box))

    def written(self) -> list[Detection | InvalidBox]:
        """Every box read, usable (:class:`Detection`) or not (:class:`InvalidBox`), in written order."""
        bad = {item.index: item for item in self.invalid}
        usable = iter(self.detections)
        return [bad[i] if i in bad else next(usable) for i in range(len(self.detections) + len(bad))]


# --- writing -----------------------------------------------------------------------------------


def _grid_int(value: float) -> int:
    if not math.isfinite(value) or not 0 <= round(value) <= GRID:
        raise ValueError(
            f"expected a grid coordinate in 0..{GRID} (convert pixels with pixel_to_grid), got {value}"
        )
    return round(value)


def format_box(box: Box) -> str:
    """A grid box as text: ``[x1, y1, x2, y2]`` for an HBB, eight numbers in the paper's corner
    order for an OBB. Coordinates are rounded to integers and must lie in 0..1000."""
    if not isinstance(box, HBB | OBB):
        raise ValueError(f"format_box expects an HBB or OBB, got {type(box).__name__}")
    return "[" + ", ".join(str(_grid_int(v)) for v in box.as_list()) + "]"


def format_grounding(box: Box) -> str:
    """The answer to a grounding instruction: the grid box alone, as :func:`format_box` writes it."""
    return format_box(box)


def _check_label(label: str) -> str:
    clean = label.strip()
    if not clean or "[" in clean or "]" in clean or len(clean.splitlines()) != 1:
        raise ValueError(
            f"a class name must be non-empty text without brackets or line breaks, got {label!r}"
        )
    return clean


def format_detections(detections: Iterable[Detection]) -> str:
    """A detection answer: one object per line, ``class name [box]``, in the given order. Class
    names are stripped of surrounding spaces; scores are not written (the model writes none)."""
    return "\n".join(f"{_check_label(d.label)} {format_box(d.box)}" for d in detections)


# --- reading the canonical grammar ----------------------------------------------------------------


def _to_grid(value: float) -> int:
    """A parsed number on the grid: clamped to 0..1000 (inf included), then rounded."""
    return round(min(float(GRID), max(0.0, value)))


def _numbers(body: str) -> list[float] | None:
    """The numbers of a bracket body separated by commas and/or spaces, or None if anything else is there."""
    parts = [p for p in re.split(r"[,\s]+", body.strip()) if p]
    if not parts or not all(re.fullmatch(NUMBER, p) for p in parts):
        return None
    return [float(p) for p in parts]


def _written_problem(values: Sequence[float]) -> str | None:
    """What is wrong with grid numbers as written, before clamping: corners swapped, or wholly off
    the grid (so clamping would squash the box onto an edge)."""
    if not all(math.isfinite(v) for v in values):
        return OFF_IMAGE
    if len(values) == 8:
        return box_problem(obb_from_polygon8(values))
    x1, y1, x2, y2 = values
    sorted_box = HBB(min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
    return order_problem(x1, y1, x2, y2) or box_problem(sorted_box)


def grid_box(values: Sequence[float], angle_ccw: float = 0.0) -> tuple[Box, str | None]:
    """Grid numbers as written (4: ``x1 y1 x2 y2``, 8: four corners) → the box as read (corners
    sorted, clamped to the grid, rounded; an xyxy box then turned ``angle_ccw`` degrees
    counter-clockwise on screen) and why it is not usable (None when it is)."""
    grid = [_to_grid(v) for v in values]
    if len(grid) == 8:
        box: Box = obb_from_polygon8(grid)
    else:
        x1, y1, x2, y2 = grid
        box = HBB(min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
        if math.isfinite(angle_ccw) and angle_ccw % 360 != 0:
            cx, cy = box.center
            turned = obb_from_cxcywha(cx, cy, box.width, box.height, -angle_ccw)
            box = obb_from_corners((_to_grid(x), _to_grid(y)) for x, y in turned.corners)
    return box, _written_problem(values) or box_problem(box)


def box_from_grid_numbers(values: Sequence[float] | None) -> tuple[Box, str | None] | None:
    """4 numbers → HBB, 8 → OBB, as :func:`_grid_box` reads them; None for any other count."""
    if values is None or len(values) not in (4, 8):
        return None
    return grid_box(values)


def read_box(text: str) -> Box | InvalidBox | None:
    """The first bracket group of ``text`` holding 4 (HBB) or 8 (OBB) grid numbers: the box when it
    is usable, an :class:`InvalidBox` saying why when it is not, None when there is none."""
    if not isinstance(text, str):
        return None
    for match in _BRACKETS_RE.finditer(text):
        read = box_from_grid_numbers(_numbers(match.group(1)))
        if read is not None:
            box, problem = read
            return box if problem is None else InvalidBox(0, "", match.group(0), problem, box)
    return None


def parse_box(text: str) -> Box | None:
    """The first bracket group of ``text`` holding 4 (HBB) or 8 (OBB) grid numbers if it is a
    usable box, else None (:func:`read_box` says why)."""
    box = read_box(text)
    return box if isinstance(box, HBB | OBB) else None


def parse_detections(text: str) -> ParseResult:
    """Read a canonical detection answer (the exact inverse of :func:`format_detections`).

    Each non-blank line should be ``class name [numbers]``; text after the first box is ignored.
    A line without a complete 4- or 8-number box (truncated, prose, bad numbers) is skipped and
    counted; a box that is not usable goes to ``invalid``. A box with nothing before it gets the
    empty label. Never raises on any string.
    """
    result = ParseResult()
    if not isinstance(text, str):
        return result
    for line in text.splitlines():
        if not line.strip():
            continue
        result.raw_lines += 1
        match = _LINE_RE.match(line)
        read = box_from_grid_numbers(_numbers(match.group("body"))) if match else None
        if read is None:
            result.skipped += 1
            continue
        result.add(match.group("label").strip(), read, f"[{match.group('body')}]")
    return result


# --- other models' dialects -------------------------------------------------------------------
