"""One analyst's session: the image and window open, the conversation, the detections found; and
its JSON form for *save* and *reopen*.

A :class:`Session` lives in a per-browser-tab ``gr.State``; nothing here is module-global. Boxes
are kept in **full-raster pixels** (x = column, y = row, pixel corners at integers), so they stay
right whichever window the analyst looks at next. The saved file holds a *reference* to the image
(its path, size and sha256), not the pixels: reopening reads the image again from there, or from
the copy :mod:`app.image_store` kept when the session was saved.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from earthgpt.geometry import HBB, OBB, Box, Detection, obb_from_corners

FORMAT = "earthgpt-session"
VERSION = 1

Window = tuple[int, int, int, int]
"""(col_off, row_off, width, height) in full-raster pixels."""


@dataclass
class Turn:
    """One question and the model's answer, about one window (and maybe one region of it)."""

    task: str
    prompt: str
    answer: str = ""
    window: Window = (0, 0, 0, 0)
    region: HBB | None = None
    skipped: int = 0
    """Lines of the answer that looked like boxes but could not be parsed."""


SOURCES = ("chat", "scene", "analyst")
"""Where a detection came from: a chat turn, a whole-scene run (both the model's), or the analyst."""
STATUSES = ("pending", "accepted")
"""A detection's review status: the model's start ``pending``; the analyst accepts (or deletes) them."""


@dataclass
class Found:
    """A detection in full-raster pixels, where it came from and how far the analyst reviewed it.

    ``source`` is one of :data:`SOURCES`; ``turn`` the chat turn (1-based) of a chat detection;
    ``model`` the model that made it (empty for the analyst's own boxes); ``status`` one of
    :data:`STATUSES`; ``edited`` says the analyst moved or relabelled a model's box; ``note`` is a
    description (a referring expression or region caption) for grounding and region-caption
    training records; ``window`` the window an analyst's box was drawn in.
    """

    detection: Detection
    prompt: str
    turn: int | None = None
    source: str = "chat"
    status: str = "pending"
    model: str = ""
    edited: bool = False
    note: str = ""
    window: Window | None = None


@dataclass
class Session:
    """Everything one analyst has open. Fields below ``layers`` are rebuilt on reopen, never saved."""

    path: str | None = None
    name: str = ""
    sensor: str | None = None
    sensor_reason: str = ""
    bands: tuple[int, ...] | None = None
    window: Window | None = None
    scale: tuple[float, float] = (1.0, 1.0)
    region: HBB | None = None
    turns: list[Turn] = field(default_factory=list)
    found: list[Found] = field(default_factory=list)
    image_size: int | None = None
    """The image file's size in bytes and sha256, as saved (:mod:`app.image_store`): how a reopen
    knows the file it finds is the session's image."""
    image_sha256: str | None = None
    layers: tuple[str, ...] = ("HBB", "OBB", "Labels", "Region")
    info: Any = None
    overview: np.ndarray | None = None
    overview_scale: tuple[float, float] = (1.0, 1.0)
    overview_builds: tuple[Any, ...] = ()
    """While the overview shown is a quick preview of a big raster: the background builds of the exact
    one (``concurrent.futures.Future``; :func:`app.handlers.refine_overview` swaps it in)."""
    view: np.ndarray | None = None
    model_image: np.ndarray | None = None
    chat: Any = None
    scene_note: str = ""
    """A warning from the last whole-scene run (answers cut at the length limit), shown with the info."""

    @property
    def loaded(self) -> bool:
        return self.info is not None and self.view is not None


def box_to_json(box: Box) -> dict[str, Any]:
    """``{"kind": "hbb", "xyxy": [...]}`` or ``{"kind": "obb", "corners": [[x, y], ...]}``."""
    if isinstance(box, HBB):
        return {"kind": "hbb", "xyxy": [box.x1, box.y1, box.x2, box.y2]}
    return {"kind": "obb", "corners": [list(p) for p in box.corners]}


def box_from_json(data: dict[str, Any]) -> Box:
    """The inverse of :func:`box_to_json`."""
    kind = data.get("kind")
    if kind == "hbb":
        return HBB(*data["xyxy"])
    if kind == "obb":
        return obb_from_corners(data["corners"])
    raise ValueError(f"expected a box of kind 'hbb' or 'obb', got {kind!r}")


def found_model(item: Found, model_name: str) -> str:
    """The model that made ``item``: its own record, else ``model_name`` (the app's model) for a
    model's detection; empty for the analyst's boxes."""
    return "" if item.source == "analyst" else (item.model or model_name)


def _found_to_json(item: Found, model_name: str = "") -> dict[str, Any]:
    det = item.detection
    return {"label": det.label, "box": box_to_json(det.box), "score": det.score,
            "prompt": item.prompt, "turn": item.turn, "source": item.source, "status": item.status,
            "model": found_model(item, model_name), "edited": item.edited, "note": item.note,
            "window": list(item.window) if item.window else None}


def _found_from_json(data: dict[str, Any], model_name: str = "") -> Found:
    """A detection of a session file; files older than the review fields give a pending detection
    of the file's model."""
    det = Detection(str(data["label"]), box_from_json(data["box"]), data.get("score"))
    source, status = str(data.get("source", "chat")), str(data.get("status") or "pending")
    if source not in SOURCES:
        raise ValueError(f"'source' must be one of {', '.join(SOURCES)}, got {source!r}")
    if status not in STATUSES:
        raise ValueError(f"'status' must be one of {', '.join(STATUSES)}, got {status!r}")
    window = data.get("window")
    if window is not None and (not isinstance(window, list) or len(window) != 4):
        raise ValueError(f"'window' must be 4 numbers [col_off, row_off, width, height], got {window!r}")
    item = Found(det, str(data.get("prompt", "")), data.get("turn"), source, status,
                 str(data.get("model") or ""), bool(data.get("edited", False)), str(data.get("note") or ""),
                 tuple(int(v) for v in window) if window else None)
    return dataclasses.replace(item, model=found_model(item, model_name))


def _turn_to_json(turn: Turn) -> dict[str, Any]:
    return {"task": turn.task, "prompt": turn.prompt, "answer": turn.answer, "window": list(turn.window),
            "region": box_to_json(turn.region) if turn.region else None, "skipped": turn.skipped}


def _turn_from_json(data: dict[str, Any]) -> Turn:
    region = box_from_json(data["region"]) if data.get("region") else None
    if region is not None and not isinstance(region, HBB):
        region = region.to_hbb() if isinstance(region, OBB) else None
    return Turn(str(data["task"]), str(data["prompt"]), str(data.get("answer", "")),
                tuple(int(v) for v in data.get("window", (0, 0, 0, 0))), region, int(data.get("skipped", 0)))


def session_to_json(session: Session, model_name: str = "") -> dict[str, Any]:
    """The saveable part of a session as plain JSON types."""
    return {
        "format": FORMAT, "version": VERSION, "model": model_name,
        "image": {"path": session.path, "name": session.name, "sensor": session.sensor,
                  "bands": list(session.bands) if session.bands else None,
                  "window": list(session.window) if session.window else None,
                  "size": session.image_size, "sha256": session.image_sha256},
        "region": box_to_json(session.region) if session.region else None,
        "turns": [_turn_to_json(t) for t in session.turns],
        "detections": [_found_to_json(f, model_name) for f in session.found],
    }


def _why(err: Exception) -> str:
    if isinstance(err, KeyError):
        return f"missing key {err.args[0]!r}"
    return str(err) or type(err).__name__


def _parsed(where: str, parse: Any, data: Any) -> Any:
    """``parse(data)``, its KeyError/TypeError/… as a ValueError that names ``where`` and the key."""
    try:
        if not isinstance(data, dict):
            raise TypeError(f"expected an object, got {type(data).__name__}")
        return parse(data)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as err:
        raise ValueError(f"session file: {where} is malformed: {_why(err)}") from err


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise ValueError(f"session file: {key!r} must be a list, got {type(value).__name__}")
    return value


def _image(image: dict[str, Any]) -> dict[str, Any]:
    window, bands = image.get("window"), image.get("bands")
    if window is not None and (not isinstance(window, list) or len(window) != 4):
        raise ValueError(f"'window' must be 4 numbers [col_off, row_off, width, height], got {window!r}")
    if bands is not None and not isinstance(bands, list):
        raise ValueError(f"'bands' must be a list of band numbers, got {bands!r}")
    path = image.get("path")
    if path is not None and not isinstance(path, str):
        raise ValueError(f"'path' must be a string, got {type(path).__name__}")
    size, sha256 = image.get("size"), image.get("sha256")
    if (size is None) != (sha256 is None) or (size is not None and not isinstance(size, int)):
        raise ValueError(f"'size' and 'sha256' must be given together, a byte count and a hex digest; "
                         f"got {size!r} and {sha256!r}")
    if sha256 is not None and not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-f]{64}", sha256)):
        raise ValueError(f"'sha256' must be 64 hex digits, got {sha256!r}")
    return {"path": path, "name": str(image.get("name") or ""), "sensor": image.get("sensor"),
            "bands": tuple(int(b) for b in bands) if bands else None,
            "window": tuple(int(v) for v in window) if window else None,
            "image_size": size, "image_sha256": sha256}


def session_from_json(data: dict[str, Any]) -> Session:
    """A session from :func:`session_to_json` output, without the image read yet (``info`` is None).

    Raises ValueError naming the part and key of a malformed file (a missing key, a wrong type).
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"not an EarthGPT session file (expected \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        found = data.get("version")
        raise ValueError(f"session file version {found!r} is not supported (expected {VERSION})")
    image = _parsed("'image'", _image, data.get("image") or {})
    region = _parsed("'region'", box_from_json, data["region"]) if data.get("region") else None
    found_from_json = functools.partial(_found_from_json, model_name=str(data.get("model") or ""))
    return Session(
        **image, region=region if isinstance(region, HBB) else None,
        turns=[_parsed(f"turns[{i}]", _turn_from_json, t) for i, t in enumerate(_list(data, "turns"))],
        found=[_parsed(f"detections[{i}]", found_from_json, f)
               for i, f in enumerate(_list(data, "detections"))],
    )


def save_session(session: Session, path: str | Path, model_name: str = "") -> Path:
    """Write the session as one JSON file; returns its path."""
    from earthgpt.vector_export import replaced_when_written

    path = Path(path)
    text = json.dumps(session_to_json(session, model_name), indent=1)
    with replaced_when_written(path) as part:  # a full disk or a kill never leaves half a session file
        part.write_text(text, encoding="utf-8")
    return path


def read_session(path: str | Path) -> Session:
    """Read a session file written by :func:`save_session` (image not read yet)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read session file {Path(path).name}: {err}") from err
    except RecursionError as err:
        raise ValueError(f"cannot read session file {Path(path).name}: nested too deeply") from err
    return session_from_json(data)
