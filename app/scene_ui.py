"""The Whole-scene tab: its components and events (laid out by :func:`app.ui.build`).

A run reports in its own tab from the start: a progress bar and line (the window being answered,
objects so far, seconds per window), the counts per class, and the detections drawn as they come.
*Cancel* stops the run (the answer being written is cut) and keeps what the windows done found
(:class:`app.scene.SceneRuns`, keyed by the browser session). Gradio's own progress is shown on
the status line alone, in its small form (``show_progress="minimal"``): an analyst whose run waits
behind another's sees its place in the queue there (Gradio's "queue: 1/1"), then the run's time, and
nothing is drawn over the other panels.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace

import gradio as gr

from app import handlers as H
from app import ui_views as V
from app.scene import SceneRuns, progress_html, scene_steps
from app.session_io import Session
from app.ui_guard import guarded_stream
from earthgpt.scene_detection import SceneResult


def scene_panel(c: SimpleNamespace) -> None:
    """The tab's components, added to ``c``."""
    with gr.Row():
        c.scene_classes = gr.Textbox(label="Classes (optional)", placeholder="ship, plane",
                                     elem_id="scene-classes")
        c.scene_obb = gr.Checkbox(False, label="Oriented boxes (OBB)")
    with gr.Row():
        c.tile = gr.Number(512, label="Window (px)", precision=0, minimum=64, elem_id="scene-tile")
        c.overlap = gr.Number(64, label="Overlap (px)", precision=0, minimum=0, elem_id="scene-overlap")
    with gr.Row():
        c.scene_btn = gr.Button("Detect over the whole scene", variant="primary", scale=3,
                                elem_id="scene-run")
        c.scene_cancel = gr.Button("Cancel", variant="stop", elem_id="scene-cancel", scale=1)
    c.scene_progress = gr.HTML("", elem_id="scene-progress")
    c.counts = gr.Markdown("", elem_id="counts")


def counts_markdown(result: SceneResult) -> str:
    """Objects per class, the windows done, and the run's notes (repetition stops, length limit,
    boxes left out as not usable)."""
    rows = "\n".join(f"| {name} | {count} |" for name, count in result.counts().items()) or "| (none) | 0 |"
    notes = [note for note in (result.stop_note(), result.limit_note(), result.invalid_note()) if note]
    return "\n".join([
        f"**{len(result.detections)} objects** in {result.tiles_done} of {result.tiles} windows "
        f"({result.tiles_empty} empty, {result.lines_skipped} malformed lines skipped)", "",
        "| class | count |", "|---|---|", rows, "", *(f"- {note}" for note in notes)])


def _status(result: SceneResult) -> str:
    found = f"{len(result.detections)} object{'s' if len(result.detections) != 1 else ''}"
    if result.cancelled:
        # the windows counted include the batch whose answers the cancel cut short (review of
        # 2026-12-04: "after 16 of 16 windows" read as a finished run)
        return (f"Whole-scene detection cancelled after {result.tiles_done} of {result.tiles} windows: "
                f"{found} kept; the answers being written when it stopped were cut short.")
    if result.tiles_done >= result.tiles:
        return f"Whole-scene detection done: {found} in {result.tiles} windows."
    return f"Whole scene: window {result.tiles_done + 1} of {result.tiles}…"


def wire_scene(c: SimpleNamespace, engine: H.Engine) -> None:
    """The run and cancel events (api names ``detect_scene`` and ``cancel_scene``)."""
    runs = SceneRuns()
    outputs = [*c.views[:-1], c.scene_progress, c.counts, c.status]

    def run(session: Session, names: str, obb: bool, tile_px: float | None, overlap_px: float | None,
            request: gr.Request) -> Iterator[tuple]:
        key = request.session_hash or ""
        cancelled = runs.start(key)
        started = time.monotonic()
        try:
            for new, result in scene_steps(session, engine, classes=names, obb=bool(obb),
                                           tile=int(tile_px or 512), overlap=int(overlap_px or 0),
                                           cancelled=cancelled):
                yield (*V.everything(new, "")[:-1], progress_html(result, time.monotonic() - started),
                       counts_markdown(result), _status(result))
        finally:
            runs.finish(key)

    def cancel(request: gr.Request) -> str:
        if runs.cancel(request.session_hash or ""):
            return "Cancelling the whole-scene run: the windows done are kept."
        return "No whole-scene run to cancel."

    c.scene_btn.click(guarded_stream(run, len(outputs)),
                      [c.state, c.scene_classes, c.scene_obb, c.tile, c.overlap], outputs,
                      show_progress="minimal", show_progress_on=[c.status], api_name="detect_scene")
    c.scene_cancel.click(cancel, None, [c.status], queue=False, api_name="cancel_scene")
