"""One analyst's session: the image and window open, the conversation, the detections found; and
its JSON form for *save* and *reopen*.

A :class:`Session` lives in a per-browser-tab ``gr.State``; nothing here is module-global. Boxes
are kept in **full-raster pixels** (x = column, y = row, pixel corners at integers), so they stay
right whichever window the analyst looks at next. The saved file holds a *reference* to the image
(its path), not the pixels: reopening reads the image again from there.
"""

from __future__ import annotations

import json
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


@dataclass
class Found:
    """A detection in full-raster pixels and where it came from (a chat turn or a whole-scene run)."""

    detection: Detection
    prompt: str
    turn: int | None = None
    source: str = "chat"


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
    layers: tuple[str, ...] = ("HBB", "OBB", "Labels", "Region")
    info: Any = None
    overview: np.ndarray | None = None
    overview_scale: tuple[float, float] = (1.0, 1.0)
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


def _found_to_json(item: Found) -> dict[str, Any]:
    det = item.detection
    return {"label": det.label, "box": box_to_json(det.box), "score": det.score,
            "prompt": item.prompt, "turn": item.turn, "source": item.source}


def _found_from_json(data: dict[str, Any]) -> Found:
    det = Detection(str(data["label"]), box_from_json(data["box"]), data.get("score"))
    return Found(det, str(data.get("prompt", "")), data.get("turn"), str(data.get("source", "chat")))


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
                  "window": list(session.window) if session.window else None},
        "region": box_to_json(session.region) if session.region else None,
        "turns": [_turn_to_json(t) for t in session.turns],
        "detections": [_found_to_json(f) for f in session.found],
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
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
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
    return {"path": path, "name": str(image.get("name") or ""), "sensor": image.get("sensor"),
            "bands": tuple(int(b) for b in bands) if bands else None,
            "window": tuple(int(v) for v in window) if window else None}


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
    return Session(
        **image, region=region if isinstance(region, HBB) else None,
        turns=[_parsed(f"turns[{i}]", _turn_from_json, t) for i, t in enumerate(_list(data, "turns"))],
        found=[_parsed(f"detections[{i}]", _found_from_json, f)
               for i, f in enumerate(_list(data, "detections"))],
    )


def save_session(session: Session, path: str | Path, model_name: str = "") -> Path:
    """Write the session as one JSON file; returns its path."""
    path = Path(path)
    path.write_text(json.dumps(session_to_json(session, model_name), indent=1), encoding="utf-8")
    return path


def read_session(path: str | Path) -> Session:
    """Read a session file written by :func:`save_session` (image not read yet)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read session file {Path(path).name}: {err}") from err
    return session_from_json(data)
