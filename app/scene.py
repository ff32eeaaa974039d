"""Whole-scene detection in the app: every window of the raster, merged, as the session's detections.

The tiling, batching and cross-window NMS are :func:`earthgpt.scene_detection.detect_scene` and the
window reader is :func:`earthgpt.raster.window_reader` (the CLI runs the same); this module supplies
the app's session and model, and reports progress.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from app.handlers import Engine, UserError
from app.session_io import Found, Session
from earthgpt.raster import model_source, tile_grid, window_reader
from earthgpt.scene_detection import SceneResult, chat_answerer, detect_scene
from earthgpt.sensors import Sensor
from earthgpt.tasks import Task, instruction


def parse_classes(text: str | None) -> list[str] | None:
    """``"ship, plane"`` → ``["ship", "plane"]``; empty → None (all classes)."""
    names = [c.strip() for c in (text or "").split(",") if c.strip()]
    return names or None


def run_scene_detection(
    session: Session, engine: Engine, *, classes: str = "", obb: bool = False, tile: int = 512,
    overlap: int = 64, batch: int = 4, progress: Callable[[int, int], None] | None = None,
) -> tuple[Session, SceneResult]:
    """Detect over the whole raster window by window; the merged result replaces earlier scene runs
    (chat detections stay). Each window's answer may be ``engine.scene_max_new_tokens`` long; when
    some hit that limit the session's ``scene_note`` says boxes may be missing. Returns the new
    session and the run's result (counts per class)."""
    if session.info is None or not session.path:
        raise UserError("no image loaded: upload a file or pick a demo tile first")
    if not 0 <= overlap < tile:
        raise UserError(f"overlap must be between 0 and the tile size ({tile}), got {overlap}")
    names = parse_classes(classes)
    sensor = Sensor(session.sensor) if session.sensor else None
    prompt = instruction(Task.detection_obb if obb else Task.detection_hbb, sensor, classes=names)
    tiles = tile_grid(session.info.width, session.info.height, tile, overlap)
    answer = chat_answerer(lambda: engine.new_chat(sensor), prompt, engine.scene_max_new_tokens)
    source = model_source(session.path, session.sensor)  # header, sensor and pair: once per run
    read = window_reader(source, tile, list(session.bands) if session.bands else None)
    result = detect_scene(tiles, read, answer, raster_size=(session.info.width, session.info.height),
                          batch=batch, classes=names, progress=progress)
    kept = [f for f in session.found if f.source != "scene"]
    kept.extend(Found(det, prompt, None, "scene") for det in result.detections)
    return dataclasses.replace(session, found=kept, scene_note=result.limit_note()), result
