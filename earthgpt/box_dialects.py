"""Other models' box dialects → the same :class:`~earthgpt.textbox.ParseResult` as our grammar, so
their answers are scored by the same metric code: GeoChat ``{<x1><y1><x2><y2>|θ}`` on 0–100, Falcon
``<box>``/``<quad>`` on 0–1000, EarthDial ``<ref>…</ref><box>[[…]]</box>``, InternVL ``[[…]]`` on
0–1000, Qwen-VL JSON in pixels. Every dialect returns grid boxes, checked by the same rule as ours
(:func:`earthgpt.box_checks.box_problem`). Grammar details: docs/FORMATS.md.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable

from earthgpt.geometry import GRID, Box
from earthgpt.textbox import (
    NUMBER,
    ParseResult,
    box_from_grid_numbers,
    grid_box,
    parse_detections,
)


def _tag_pair(names: str) -> re.Pattern[str]:
    """``<name>body</name>`` for a name of ``names`` (``"p|ref"``) whose body holds no tag of these
    names: each match attempt stops at the next such tag, so a run of unclosed tags is read in
    linear time (a lazy ``.*?`` would rescan the rest of the text from each of them)."""
    return re.compile(rf"<({names})>((?:(?!</?(?:{names})>).)*)</\1>", re.S)


_NUM_RE = re.compile(NUMBER)
_TAG_RE = re.compile(r"<[^<>]*>")
_NAMED_RE = _tag_pair("p|ref")
_LABEL_JUNK = " \t\r\n,;:.|[]{}()"


def _gap_label(gap: str) -> str:
    """A class name from the text before a box: the last ``<p>…</p>`` / ``<ref>…</ref>`` in it,
    else the text itself with tags and punctuation removed."""
    named = _NAMED_RE.findall(gap)
    text = named[-1][1] if named else _TAG_RE.sub(" ", gap)
    return " ".join(text.split()).strip(_LABEL_JUNK)


ReadBox = tuple[Box, str | None]


def _scan(
    text: str, pattern: re.Pattern[str], to_box: Callable[[re.Match[str]], ReadBox | None], raw: int
) -> ParseResult:
    """Walk the box matches of a dialect: each box takes the label written since the previous box
    (or keeps the previous label when none was written); a box ``to_box`` rejects is skipped."""
    result = ParseResult()
    label, last = "", 0
    for match in pattern.finditer(text):
        label = _gap_label(text[last : match.start()]) or label
        last = match.end()
        try:
            read = to_box(match)
        except (ValueError, OverflowError):
            read = None
        if read is not None:
            result.add(label, read, match.group(0))
    seen = len(result.detections) + len(result.invalid)
    result.raw_lines = max(raw, seen)
    result.skipped = result.raw_lines - seen
    return result


_GEOCHAT_RE = re.compile(
    rf"\{{\s*<({NUMBER})>\s*<({NUMBER})>\s*<({NUMBER})>\s*<({NUMBER})>\s*(?:\|\s*<?\s*({NUMBER})\s*>?\s*)?\}}"
)


def _parse_geochat(text: str, width: float | None, height: float | None) -> ParseResult:
    """GeoChat: ``<p>label</p> {<x1><y1><x2><y2>|<θ>}{…}`` on a 0–100 grid, θ in degrees,
    positive counter-clockwise on screen (GeoChat draws with cv2.getRotationMatrix2D)."""

    def to_box(m: re.Match[str]) -> ReadBox:
        return grid_box([float(v) * (GRID / 100) for v in m.groups()[:4]], float(m.group(5) or 0))

    return _scan(text, _GEOCHAT_RE, to_box, raw=text.count("{"))


_FALCON_TAG_RE = _tag_pair("box|quad")
_FALCON_RUN_RE = re.compile(rf"(?:<(?:loc_)?{NUMBER}>\s*){{4,}}")


def _parse_falcon(text: str, width: float | None, height: float | None) -> ParseResult:
    """Falcon: ``<box><x1><y1><x2><y2></box>`` (HBB) and ``<quad>`` + 8 numbers ``</quad>`` (OBB),
    numbers on Falcon's 1000-bin grid taken as 0–1000 grid values. Inside a tag any number
    layout is read (``<12>``, ``<loc_12>``, ``12, 34``, ``[12, 34, …]``); without tags, bare runs
    of 4 or 8 ``<n>`` tokens are read. The label is the text before the tag."""
    if "<box>" in text or "<quad>" in text:

        def from_tag(m: re.Match[str]) -> ReadBox | None:
            values = [float(v) for v in _NUM_RE.findall(m.group(2))]
            expected = 4 if m.group(1) == "box" else 8
            return box_from_grid_numbers(values) if len(values) == expected else None

        return _scan(text, _FALCON_TAG_RE, from_tag, raw=text.count("<box>") + text.count("<quad>"))

    def from_run(m: re.Match[str]) -> ReadBox | None:
        return box_from_grid_numbers([float(v) for v in _NUM_RE.findall(m.group(0).replace("loc_", ""))])

    return _scan(text, _FALCON_RUN_RE, from_run, raw=0)


_LIST_RE = re.compile(rf"\[\s*({NUMBER}(?:\s*,\s*{NUMBER})*)\s*,?\s*\]")
_LIST_OPEN_RE = re.compile(r"\[\s*[-+]?\d")


def _list_parser(scale: float, rotated: bool) -> Callable[[str, float | None, float | None], ParseResult]:
    def to_box(m: re.Match[str]) -> ReadBox | None:
        values = [float(v) for v in _NUM_RE.findall(m.group(1))]
        if len(values) == 5 and rotated:
            return grid_box([v * scale for v in values[:4]], values[4])
        if len(values) == 4:
            return grid_box([v * scale for v in values])
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
    result = ParseResult(raw_lines=len(items))
    for item in items:
        read = _qwen_item(item, width, height)
        if read is None:
            result.skipped += 1
        else:
            result.add(*read)
    return result


def _json_or_none(text: str) -> object:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None


def _qwen_item(item: object, width: float, height: float) -> tuple[str, ReadBox, str] | None:
    """One object of a Qwen answer → its label, its box read onto the grid, and the box as written."""
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
        grid = [GRID * x1 / width, GRID * y1 / height, GRID * x2 / width, GRID * y2 / height]
        return " ".join(label.split()), grid_box(grid), json.dumps(values)
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
