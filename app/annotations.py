"""The analyst's review of a session's detections: accept, delete, relabel, move or reshape a box,
and draw boxes of one's own (an HBB, or an OBB by a rotation angle). Pure functions: a
:class:`~app.session_io.Session` in, a new one out; no Gradio.

The annotations are the session's ``found`` list, numbered from 1 in list order (the review
table's ``#``). The model's detections start ``pending``; accepting, relabelling or reshaping one
makes it ``accepted`` (relabelling and reshaping also mark it ``edited``); the analyst's own boxes
are ``accepted`` with source ``analyst``. Only accepted boxes with a class become training data
(:mod:`app.mmrs_export`).

Boxes are typed on the 0–1000 grid of the current window (as the model's answers and the region
box are): ``[x1, y1, x2, y2]`` is a rectangle that the rotation ``angle`` (degrees, clockwise on
screen, as :func:`earthgpt.geometry.obb_from_cxcywha`) turns about its centre, angle 0 giving an
HBB; eight numbers are an OBB's four corners (the angle is then ignored). The rotation is applied
in full-raster pixels, so a box keeps its shape whatever the window's aspect.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable
from typing import Any

from app.handlers import UserError, require_image
from app.session_io import Found, Session, found_model
from earthgpt.box_spaces import grid_to_raster, image_to_raster, raster_to_grid, raster_to_image
from earthgpt.geometry import HBB, OBB, Box, Detection, obb_from_cxcywha, obb_to_cxcywha
from earthgpt.raster import Tile
from earthgpt.tasks import GROUNDING_PROMPT, Task
from earthgpt.textbox import InvalidBox, parse_box, read_box

ANALYST = "analyst"
COLUMNS = ("#", "status", "class", "note", "kind", "grid box", "angle", "from")
"""The review table's columns (:func:`review_rows`)."""
_REFERRING = re.compile(
    re.escape(GROUNDING_PROMPT).replace(re.escape("{referring}"), "(?P<phrase>.+?)") + "$")


def _tile(session: Session) -> Tile:
    require_image(session)
    return Tile(*session.window)


def _item(session: Session, number: int) -> Found:
    if not 1 <= int(number) <= len(session.found):
        raise UserError(f"there is no annotation #{number}: the table lists {len(session.found)}")
    return session.found[int(number) - 1]


def _replaced(session: Session, number: int, item: Found) -> Session:
    found = list(session.found)
    found[int(number) - 1] = item
    return dataclasses.replace(session, found=found)


def clean_label(text: str | None) -> str:
    """A class name as detection answers write it: single line, no ``[`` or ``]``; empty refused."""
    label = " ".join((text or "").split())
    if not label:
        raise UserError("the class is empty: type a class name such as 'ship'")
    if "[" in label or "]" in label:
        raise UserError(f"a class name cannot hold '[' or ']' (they start a box), got {label!r}")
    return label


def accept(session: Session, numbers: Iterable[int]) -> Session:
    """Mark annotations accepted; one without a class is refused (give it one with :func:`relabel`)."""
    for number in numbers:
        item = _item(session, number)
        if not item.detection.label.strip():
            raise UserError(f"annotation #{number} has no class yet: type one and press Apply")
        session = _replaced(session, number, dataclasses.replace(item, status="accepted"))
    return session


def accept_all(session: Session) -> Session:
    """Accept every pending annotation that has a class (those without one stay pending)."""
    found = [dataclasses.replace(f, status="accepted") if f.detection.label.strip() else f
             for f in session.found]
    return dataclasses.replace(session, found=found)


def delete(session: Session, number: int) -> Session:
    """Remove one annotation (later ones move up one number)."""
    _item(session, number)
    return dataclasses.replace(session, found=[f for i, f in enumerate(session.found, 1) if i != int(number)])


def relabel(session: Session, number: int, label: str, note: str = "") -> Session:
    """Give an annotation a class and a description; it becomes accepted (and edited if it changed)."""
    item = _item(session, number)
    label, note = clean_label(label), clean_note(note)
    changed = label != item.detection.label or note != description(session, item)
    detection = dataclasses.replace(item.detection, label=label)
    return _replaced(session, number, dataclasses.replace(
        item, detection=detection, note=note, status="accepted", edited=item.edited or changed))


def clean_note(note: str | None) -> str:
    """A description as one line; one with no words (``"..."``, ``" . "``) is no description (it
    would have made the whole MMRS export fail: review of 2026-12-04)."""
    text = " ".join((note or "").split())
    return text if text.strip(" .") else ""


def set_box(session: Session, number: int, text: str, angle: float = 0.0) -> Session:
    """Move or reshape an annotation to the box typed on the current window's grid (see the module doc)."""
    item = _item(session, number)
    box = box_from_text(session, text, angle)
    changed = box != item.detection.box
    detection = dataclasses.replace(item.detection, box=box)
    window = session.window if changed else item.window  # typed on this window: it belongs to it now
    return _replaced(session, number, dataclasses.replace(
        item, detection=detection, status="accepted", edited=item.edited or changed, window=window))


def apply(session: Session, number: int, label: str, note: str, text: str, angle: float = 0.0) -> Session:
    """The review form's *Apply*: :func:`relabel`, and :func:`set_box` when the typed box or angle
    differs from the annotation's own (so an untouched box is not moved by grid rounding)."""
    session = relabel(session, number, label, note)
    box = _item(session, number).detection.box
    if not (text or "").strip():
        return session
    if in_window(session, box):
        shown, shown_angle = box_text(session, box)
        if parse_box(shown) == parse_box(text) and float(angle or 0.0) == shown_angle:
            return session
    return set_box(session, number, text, angle)


def add_box(session: Session, label: str, text: str, angle: float = 0.0, note: str = "") -> Session:
    """The analyst's own box, typed on the current window's grid: accepted, source ``analyst``."""
    label = clean_label(label)
    box = box_from_text(session, text, angle)
    item = Found(Detection(label, box), "", None, ANALYST, "accepted", note=clean_note(note),
                 window=session.window)
    return dataclasses.replace(session, found=[*session.found, item])


# ----------------------------------------------------------------------------- boxes ↔ grid text


def box_from_text(session: Session, text: str, angle: float = 0.0) -> Box:
    """A box typed on the current window's grid (module doc) → full-raster pixels."""
    tile = _tile(session)
    grid = read_box(text or "")
    problem = grid.reason if isinstance(grid, InvalidBox) else None if grid else "not 4 or 8 numbers"
    if problem:
        raise UserError(f"expected a box on the 0–1000 grid like [120, 80, 460, 390] (or 8 numbers for "
                        f"corners); got {text!r} ({problem})")
    box = grid_to_raster(grid, tile)
    angle = float(angle or 0.0)
    if not math.isfinite(angle):
        raise UserError(f"the angle must be a number of degrees, got {angle}")
    if isinstance(box, OBB) or angle % 360 == 0:
        return box
    (cx, cy), w, h = box.center, box.width, box.height
    return obb_from_cxcywha(cx, cy, w, h, angle)


def _rectangle(box: OBB) -> tuple[HBB, float] | None:
    """An OBB that is a rectangle as its unrotated HBB (full-raster pixels) and angle in (-45, 45]
    (the same rectangle turned by 90° the other way, with width and height swapped, is not used),
    else None."""
    cx, cy, w, h, angle = obb_to_cxcywha(box)
    size = max(w, h, 1e-9)
    for width, height, turn in ((w, h, angle), (h, w, angle - 90.0), (h, w, angle + 90.0)):
        again = obb_from_cxcywha(cx, cy, width, height, turn)
        same = all(math.dist(p, q) <= 1e-6 * size for p, q in zip(again.corners, box.corners, strict=True))
        if same and -45.0 < turn <= 45.0:
            return HBB(cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2), turn
    return None


def _grid_text(box: Box) -> str:
    return "[" + ", ".join(str(round(v)) for v in box.as_list()) + "]"


def box_text(session: Session, box: Box) -> tuple[str, float]:
    """The inverse of :func:`box_from_text`: grid text and angle of a full-raster box on the current
    window (an OBB whose unrotated rectangle leaves the window is written as its 8 corners)."""
    tile = _tile(session)
    if isinstance(box, HBB):
        return _grid_text(raster_to_grid(box, tile)), 0.0
    rect = _rectangle(box)
    if rect is not None:
        unrotated, angle = rect
        x1, y1, x2, y2 = unrotated.as_list()
        c0, r0, w, h = session.window
        if c0 <= x1 and r0 <= y1 and x2 <= c0 + w and y2 <= r0 + h:
            return _grid_text(raster_to_grid(unrotated, tile)), round(angle, 1)
    return _grid_text(raster_to_grid(box, tile)), 0.0


def editor_box(session: Session, text: str, size: tuple[int, int]) -> dict[str, Any] | None:
    """The annotator box (pixels of an image of the window that is ``size``) of typed grid text:
    the unrotated rectangle, or the enclosing rectangle of 8 corners; None when it does not parse."""
    grid = parse_box(text or "")
    if grid is None:
        return None
    tile = _tile(session)
    shown = raster_to_image(grid_to_raster(grid, tile), tile, size)
    x1, y1, x2, y2 = (shown if isinstance(shown, HBB) else shown.to_hbb()).as_list()
    return {"xmin": round(x1), "ymin": round(y1), "xmax": round(x2), "ymax": round(y2), "label": "box",
            "color": (255, 255, 0)}


def text_from_editor(session: Session, box: dict[str, Any], size: tuple[int, int]) -> str:
    """Grid text of a box dragged in the annotator (pixels of an image of the window that is ``size``)."""
    x1, x2 = sorted((float(box["xmin"]), float(box["xmax"])))
    y1, y2 = sorted((float(box["ymin"]), float(box["ymax"])))
    tile = _tile(session)
    scale = (tile.width / size[0], tile.height / size[1])
    return _grid_text(raster_to_grid(image_to_raster(HBB(x1, y1, x2, y2), tile, scale), tile))


# ----------------------------------------------------------------------------- what the table shows


def referring_phrase(prompt: str) -> str:
    """The referring expression of a grounding instruction (:data:`earthgpt.tasks.GROUNDING_PROMPT`,
    after the sensor sentence), or ``""`` for any other prompt."""
    match = _REFERRING.search(prompt.strip())
    return match.group("phrase") if match else ""


def description(session: Session, item: Found) -> str:
    """An annotation's description: the analyst's note, else the referring expression of the
    grounding turn that found it."""
    if item.note or item.turn is None or not 1 <= item.turn <= len(session.turns):
        return item.note
    turn = session.turns[item.turn - 1]
    return referring_phrase(turn.prompt) if turn.task == Task.grounding else ""


def provenance(item: Found, model_name: str = "") -> str:
    """``analyst``, ``<model> · turn 3``, ``<model> · chat`` (its conversation cleared) or
    ``<model> · whole scene``, plus ``· edited``."""
    if item.source == ANALYST:
        return ANALYST
    where = (f"turn {item.turn}" if item.turn is not None
             else "chat" if item.source == "chat" else "whole scene")
    text = f"{found_model(item, model_name) or 'model'} · {where}"
    return text + " · edited" if item.edited else text


def review_rows(session: Session, model_name: str = "") -> list[list[Any]]:
    """One row per annotation for the review table (:data:`COLUMNS`); boxes outside the current
    window say so instead of giving grid numbers."""
    rows = []
    for number, item in enumerate(session.found, 1):
        box = item.detection.box
        text, angle = box_text(session, box) if in_window(session, box) else ("outside this window", 0.0)
        rows.append([number, item.status, item.detection.label or "(no class)", description(session, item),
                     "obb" if isinstance(box, OBB) else "hbb", text, angle, provenance(item, model_name)])
    return rows


def choices(session: Session) -> list[tuple[str, int]]:
    """``("#3 ship (pending)", 3)`` for each annotation: the picker's choices."""
    return [(f"#{n} {f.detection.label or '(no class)'} ({f.status})", n)
            for n, f in enumerate(session.found, 1)]


def in_window(session: Session, box: Box) -> bool:
    """Whether any part of a full-raster ``box`` lies in the current window."""
    if session.window is None:
        return False
    c0, r0, w, h = session.window
    x1, y1, x2, y2 = (box if isinstance(box, HBB) else box.to_hbb()).as_list()
    return x2 > c0 and y2 > r0 and x1 < c0 + w and y1 < r0 + h


def review_summary(session: Session) -> str:
    """``"5 annotations: 3 accepted, 2 pending"``."""
    accepted = sum(f.status == "accepted" for f in session.found)
    return f"{len(session.found)} annotations: {accepted} accepted, {len(session.found) - accepted} pending"

