"""Boxes and labels ↔ text: the canonical EarthGPT grammar and adapters for other models' dialects.

Canonical grammar (docs/FORMATS.md): integer coordinates on the 0–1000 grid, an HBB written
``[x1, y1, x2, y2]``, an OBB ``[x1, y1, x2, y2, x3, y3, x4, y4]`` in the paper's corner order, and a
detection answer one object per line, ``class name [x1, y1, x2, y2]``. Parsing is the exact
inverse of formatting and never raises on model output: a line it cannot read is skipped and
counted. Numbers outside 0–1000 are clamped to the grid and decimals are rounded.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from earthgpt.geometry import (
    GRID,
    HBB,
    OBB,
    Box,
    Detection,
    obb_from_corners,
    obb_from_cxcywha,
    obb_from_polygon8,
    pixel_to_grid,
)

_NUM = r"[-+]?\d+(?:\.\d+)?"
_NUM_RE = re.compile(_NUM)
_BRACKETS_RE = re.compile(r"\[([^\[\]]*)\]")
_LINE_RE = re.compile(r"^(?P<label>[^\[\]]*)\[(?P<body>[^\[\]]*)\]")
_TAG_RE = re.compile(r"<[^<>]*>")
_NAMED_RE = re.compile(r"<(p|ref)>(.*?)</\1>", re.S)
_LABEL_JUNK = " \t\r\n,;:.|[]{}()"


@dataclass
class ParseResult:
    """What a parser read: the detections (grid boxes), how many candidates it skipped as
    malformed, and how many candidates it saw (non-blank lines for the canonical grammar, box
    openings for the other dialects)."""

    detections: list[Detection] = field(default_factory=list)
    skipped: int = 0
    raw_lines: int = 0


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
    if not parts or not all(re.fullmatch(_NUM, p) for p in parts):
        return None
    return [float(p) for p in parts]


def _box_from_grid_numbers(values: Sequence[float] | None) -> Box | None:
    """4 numbers → HBB (corners sorted), 8 → OBB; clamped to the grid. None for any other count."""
    if values is None or len(values) not in (4, 8):
        return None
    grid = [_to_grid(v) for v in values]
    if len(grid) == 8:
        return obb_from_polygon8(grid)
    x1, y1, x2, y2 = grid
    return HBB(min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def parse_box(text: str) -> Box | None:
    """The first bracket group of ``text`` holding 4 (HBB) or 8 (OBB) grid numbers, or None."""
    if not isinstance(text, str):
        return None
    for match in _BRACKETS_RE.finditer(text):
        box = _box_from_grid_numbers(_numbers(match.group(1)))
        if box is not None:
            return box
    return None


def parse_detections(text: str) -> ParseResult:
    """Read a canonical detection answer (the exact inverse of :func:`format_detections`).

    Each non-blank line should be ``class name [numbers]``; text after the first box is ignored.
    A line without a complete 4- or 8-number box (truncated, prose, bad numbers) is skipped and
    counted. A box with nothing before it gets the empty label. Never raises on any string.
    """
    result = ParseResult()
    if not isinstance(text, str):
        return result
    for line in text.splitlines():
        if not line.strip():
            continue
        result.raw_lines += 1
        match = _LINE_RE.match(line)
        box = _box_from_grid_numbers(_numbers(match.group("body"))) if match else None
        if box is None:
            result.skipped += 1
            continue
        result.detections.append(Detection(match.group("label").strip(), box))
    return result


# --- other models' dialects -------------------------------------------------------------------


def _gap_label(gap: str) -> str:
    """A class name from the text before a box: the last ``<p>…</p>`` / ``<ref>…</ref>`` in it,
    else the text itself with tags and punctuation removed."""
    named = _NAMED_RE.findall(gap)
    text = named[-1][1] if named else _TAG_RE.sub(" ", gap)
    return " ".join(text.split()).strip(_LABEL_JUNK)


def _scan(
    text: str, pattern: re.Pattern[str], to_box: Callable[[re.Match[str]], Box | None], raw: int
) -> ParseResult:
    """Walk the box matches of a dialect: each box takes the label written since the previous box
    (or keeps the previous label when none was written); a box ``to_box`` rejects is skipped."""
    detections: list[Detection] = []
    label, last = "", 0
    for match in pattern.finditer(text):
        label = _gap_label(text[last : match.start()]) or label
        last = match.end()
        try:
            box = to_box(match)
        except (ValueError, OverflowError):
            box = None
        if box is not None:
            detections.append(Detection(label, box))
    raw = max(raw, len(detections))
    return ParseResult(detections, skipped=raw - len(detections), raw_lines=raw)


def _rotated_grid_box(values: Sequence[float], angle_ccw: float, scale: float) -> Box:
    """An xyxy box on a ``GRID/scale`` grid with a counter-clockwise (on screen) angle → grid box."""
    x1, y1, x2, y2 = (_to_grid(v * scale) for v in values)
    hbb = HBB(min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
    if not math.isfinite(angle_ccw) or angle_ccw % 360 == 0:
        return hbb
    cx, cy = hbb.center
    obb = obb_from_cxcywha(cx, cy, hbb.width, hbb.height, -angle_ccw)
    return obb_from_corners((_to_grid(x), _to_grid(y)) for x, y in obb.corners)


_GEOCHAT_RE = re.compile(
    rf"\{{\s*<({_NUM})>\s*<({_NUM})>\s*<({_NUM})>\s*<({_NUM})>\s*(?:\|\s*<?\s*({_NUM})\s*>?\s*)?\}}"
)


def _parse_geochat(text: str, width: float | None, height: float | None) -> ParseResult:
    """GeoChat: ``<p>label</p> {<x1><y1><x2><y2>|<θ>}{…}`` on a 0–100 grid, θ in degrees,
    positive counter-clockwise on screen (GeoChat draws with cv2.getRotationMatrix2D)."""

    def to_box(m: re.Match[str]) -> Box:
        return _rotated_grid_box([float(v) for v in m.groups()[:4]], float(m.group(5) or 0), GRID / 100)

    return _scan(text, _GEOCHAT_RE, to_box, raw=text.count("{"))


_FALCON_TAG_RE = re.compile(r"<(box|quad)>(.*?)</\1>", re.S)
_FALCON_RUN_RE = re.compile(rf"(?:<(?:loc_)?{_NUM}>\s*){{4,}}")


def _parse_falcon(text: str, width: float | None, height: float | None) -> ParseResult:
    """Falcon: ``<box><x1><y1><x2><y2></box>`` (HBB) and ``<quad>`` + 8 numbers ``</quad>`` (OBB),
    numbers on Falcon's 1000-bin grid taken as 0–1000 grid values. Inside a tag any number
    layout is read (``<12>``, ``<loc_12>``, ``12, 34``, ``[12, 34, …]``); without tags, bare runs
    of 4 or 8 ``<n>`` tokens are read. The label is the text before the tag."""
    if "<box>" in text or "<quad>" in text:

        def from_tag(m: re.Match[str]) -> Box | None:
            values = [float(v) for v in _NUM_RE.findall(m.group(2))]
            expected = 4 if m.group(1) == "box" else 8
            return _box_from_grid_numbers(values) if len(values) == expected else None

        return _scan(text, _FALCON_TAG_RE, from_tag, raw=text.count("<box>") + text.count("<quad>"))

    def from_run(m: re.Match[str]) -> Box | None:
        return _box_from_grid_numbers([float(v) for v in _NUM_RE.findall(m.group(0).replace("loc_", ""))])

    return _scan(text, _FALCON_RUN_RE, from_run, raw=0)


_LIST_RE = re.compile(rf"\[\s*({_NUM}(?:\s*,\s*{_NUM})*)\s*,?\s*\]")
_LIST_OPEN_RE = re.compile(r"\[\s*[-+]?\d")


def _list_parser(scale: float, rotated: bool) -> Callable[[str, float | None, float | None], ParseResult]:
    def to_box(m: re.Match[str]) -> Box | None:
        values = [float(v) for v in _NUM_RE.findall(m.group(1))]
        if len(values) == 5 and rotated:
            return _rotated_grid_box(values[:4], values[4], scale)
        if len(values) == 4:
            return _rotated_grid_box(values, 0.0, scale)
        return None

    def parse(text: str, width: float | None, height: float | None) -> ParseResult:
        return _scan(text, _LIST_RE, to_box, raw=len(_LIST_OPEN_RE.findall(text)))

    return parse


_parse_earthdial = _list_parser(scale=GRID / 100, rotated=True)
_parse_earthdial.__doc__ = """EarthDial: ``<ref>label</ref><box>[[x1, y1, x2, y2, θ], …]</box>`` or bare
``[[x1, y1, x2, y2, θ]][[…]]`` on a 0–100 grid, θ optional, in degrees, counter-clockwise on screen
(EarthDial's evaluation rotates corners with the row-vector matrix, the same sense as GeoChat)."""

_parse_internvl = _list_parser(scale=1.0, rotated=False)
_parse_internvl.__doc__ = """InternVL: ``<ref>label</ref><box>[[x1, y1, x2, y2], …]</box>`` on 0–1000."""

_FENCE_RE = re.compile(r"```(?:json)?\s*(.*?)(?:```|$)", re.S)
_OBJECT_RE = re.compile(r"\{[^{}]*\}")


def _parse_qwen(text: str, width: float | None, height: float | None) -> ParseResult:
    """Qwen2.5-VL: a JSON list like ``[{"bbox_2d": [x1, y1, x2, y2], "label": "car"}]`` in pixels of
    the image the model saw (optionally inside a ```json fence); converted to the grid with
    ``width`` and ``height``. A truncated list is read object by object."""
    if width is None or height is None:
        raise ValueError(
            "the qwen dialect writes pixel boxes: pass width= and height= of the image the model saw"
        )
    if not all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in (width, height)):
        raise ValueError(f"image size must be positive numbers, got width={width!r}, height={height!r}")
    fenced = _FENCE_RE.search(text)
    body = fenced.group(1) if fenced else text
    try:
        data = json.loads(body)
        items = data if isinstance(data, list) else [data]
    except (json.JSONDecodeError, RecursionError):
        items = [_json_or_none(m.group(0)) for m in _OBJECT_RE.finditer(body)]
        items += [None] * max(0, body.count("{") - len(items))  # objects cut off by truncation
    detections = [d for d in (_qwen_item(item, width, height) for item in items) if d is not None]
    return ParseResult(detections, skipped=len(items) - len(detections), raw_lines=len(items))


def _json_or_none(text: str) -> object:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None


def _qwen_item(item: object, width: float, height: float) -> Detection | None:
    if not isinstance(item, dict):
        return None
    values = item.get("bbox_2d", item.get("bbox"))
    label = item.get("label", "")
    if not isinstance(values, list) or len(values) != 4 or not isinstance(label, str):
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return None
    try:
        x1, y1, x2, y2 = (float(v) for v in values)
        box = HBB(min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
        return Detection(" ".join(label.split()), pixel_to_grid(box, width, height))
    except (ValueError, OverflowError):
        return None


def _parse_earthgpt(text: str, width: float | None, height: float | None) -> ParseResult:
    """The canonical EarthGPT grammar (:func:`parse_detections`)."""
    return parse_detections(text)


DIALECTS: dict[str, Callable[[str, float | None, float | None], ParseResult]] = {
    "earthgpt": _parse_earthgpt,
    "geochat": _parse_geochat,
    "falcon": _parse_falcon,
    "earthdial": _parse_earthdial,
    "internvl": _parse_internvl,
    "qwen": _parse_qwen,
}
"""Dialect name → parser ``(text, width, height) -> ParseResult`` with grid boxes."""


def parse_dialect(
    text: str, dialect: str, *, width: float | None = None, height: float | None = None
) -> ParseResult:
    """Read another model's box output into grid detections (0–1000), so one metric scores all.

    ``width`` and ``height`` (pixels of the image the model saw) are needed only by dialects that
    write pixels (``qwen``). Malformed output is skipped and counted, never raised; an unknown
    dialect or a missing size raises ValueError.
    """
    parser = DIALECTS.get(dialect)
    if parser is None:
        raise ValueError(f"unknown box dialect {dialect!r}; known: {', '.join(DIALECTS)}")
    if not isinstance(text, str):
        return ParseResult()
    return parser(text, width, height)
