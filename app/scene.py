"""Whole-scene detection in the app: every window of the raster, merged, as the session's detections.

The tiling, batching and cross-window NMS are :func:`earthgpt.scene_detection.iter_detect_scene` and
the window reader is :func:`earthgpt.raster.window_reader` (the CLI runs the same); this module
supplies the app's session and model, reports progress window by window and lets the analyst
cancel a run (:class:`SceneRuns`), keeping what the windows done so far found.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator

from app.handlers import Engine, UserError
from app.session_io import Found, Session
from earthgpt.raster import model_source, tile_grid, window_reader
from earthgpt.scene_detection import SceneResult, chat_answerer, detection_stop_rule, iter_detect_scene
from earthgpt.sensors import Sensor
from earthgpt.tasks import Task, instruction


def parse_classes(text: str | None) -> list[str] | None:
    """``"ship, plane"`` → ``["ship", "plane"]``; empty → None (all classes)."""
    names = [c.strip() for c in (text or "").split(",") if c.strip()]
    return names or None


def scene_steps(
    session: Session, engine: Engine, *, classes: str = "", obb: bool = False, tile: int = 512,
    overlap: int = 64, batch: int | None = None, cancelled: Callable[[], bool] | None = None,
) -> Iterator[tuple[Session, SceneResult]]:
    """Detect over the whole raster window by window, yielding the session with the detections so
    far and the run's result: once before the first window, then after each batch of ``batch``
    windows (default ``engine.scene_batch_size``; a batch of a real model's windows is answered in
    one token loop, :func:`~earthgpt.scene_detection.chat_answerer`). The run's detections replace
    earlier scene runs (chat and analyst boxes, and scene detections the analyst accepted, stay).

    Each window's answer may be ``engine.scene_max_new_tokens`` long and stops early when the model
    repeats itself (:func:`~earthgpt.scene_detection.detection_stop_rule`). When ``cancelled()``
    turns True the answers being written are cut, the run stops, and the last session yielded keeps
    what was done (its result says ``cancelled``). The session's ``scene_note`` says when answers
    hit the length limit (boxes may be missing).
    """
    if session.info is None or not session.path:
        raise UserError("no image loaded: upload a file or pick a demo tile first")
    if not 0 <= overlap < tile:
        raise UserError(f"overlap must be between 0 and the tile size ({tile}), got {overlap}")
    names = parse_classes(classes)
    sensor = Sensor(session.sensor) if session.sensor else None
    prompt = instruction(Task.detection_obb if obb else Task.detection_hbb, sensor, classes=names)
    tiles = tile_grid(session.info.width, session.info.height, tile, overlap)
    answer = chat_answerer(lambda: engine.new_chat(sensor), prompt, engine.scene_max_new_tokens,
                           stop_rule=detection_stop_rule(), cancelled=cancelled)
    source = model_source(session.path, session.sensor)  # header, sensor and pair: once per run
    read = window_reader(source, tile, list(session.bands) if session.bands else None)
    kept = [f for f in session.found if f.source != "scene" or f.status == "accepted"]  # reviewed work stays
    size = (session.info.width, session.info.height)
    batch = batch or engine.scene_batch_size
    for result in iter_detect_scene(tiles, read, answer, raster_size=size, batch=batch, classes=names,
                                    cancelled=cancelled):
        found = [*kept, *(Found(det, prompt, None, "scene", model=engine.name) for det in result.detections)]
        yield dataclasses.replace(session, found=found, scene_note=result.limit_note()), result


def run_scene_detection(
    session: Session, engine: Engine, *, classes: str = "", obb: bool = False, tile: int = 512,
    overlap: int = 64, batch: int | None = None, progress: Callable[[int, int], None] | None = None,
) -> tuple[Session, SceneResult]:
    """:func:`scene_steps` run to its end; ``progress(done, total)`` after each batch."""
    steps = scene_steps(session, engine, classes=classes, obb=obb, tile=tile, overlap=overlap, batch=batch)
    for step in steps:
        result = step[1]
        if progress is not None and result.tiles_done:
            progress(result.tiles_done, result.tiles)
    return step


def progress_html(result: SceneResult, seconds: float = 0.0) -> str:
    """The run's progress for the Whole-scene tab: a bar, the window (or the batch of windows) being
    answered and the objects found so far (``seconds`` since the start gives the time per window)."""
    done, total = result.tiles_done, result.tiles
    found = f"{len(result.detections)} object{'s' if len(result.detections) != 1 else ''}"
    if result.cancelled:
        line = f"Cancelled after {done} of {total} windows: {found} kept."
    elif done >= total:
        line = f"Done: {total} windows, {found}."
    else:
        pace = f" · {seconds / done:.0f} s per window" if done and seconds else ""
        now = (f"Windows {done + 1}–{done + result.answering}" if result.answering > 1
               else f"Window {done + 1}")
        line = f"{now} of {total}: answering… · {found} so far{pace}"
    return (f'<div id="scene-progress-box"><progress value="{done}" max="{max(total, 1)}" '
            f'style="width:100%"></progress><p>{line}</p></div>')


class SceneRuns:
    """The whole-scene runs in progress, one per browser session, so a Cancel click can reach its run.

    ``start(key)`` gives the run's ``cancelled`` check; ``cancel(key)`` sets it (False when that
    session has no run); ``finish(key)`` forgets the run. Thread-safe: Gradio runs each in a worker.
    """

    def __init__(self) -> None:
        self._runs: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def start(self, key: str) -> Callable[[], bool]:
        event = threading.Event()
        with self._lock:
            self._runs[key] = event
        return event.is_set

    def cancel(self, key: str) -> bool:
        with self._lock:
            event = self._runs.get(key)
        if event is None:
            return False
        event.set()
        return True

    def finish(self, key: str) -> None:
        with self._lock:
            self._runs.pop(key, None)
