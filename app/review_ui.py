"""The Review tab: the analyst's review of the session's detections (:mod:`app.annotations`) and
the export of the reviewed boxes as MMRS training records (:mod:`app.mmrs_export`). Layout and
wiring only; :func:`review_panel` lays the tab out, :func:`wire_review` connects it.

The box editor is a one-box annotator over the window image, every annotation drawn on it with
its number (``#3 ship``; ``#3 ship ?`` while pending). Picking an annotation (in the table or the
picker) puts its box in the editor and its class, description, grid box and angle in the form;
dragging the box or its corners rewrites the grid box; *Apply* writes the form to the annotation,
*Add as new box* makes an analyst's box of it. The picked number lives in a ``gr.State``, so a
refresh triggered by another event never reads a stale picker.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import gradio as gr
import numpy as np
from gradio_image_annotation import image_annotator

from app import annotations as A
from app import handlers as H
from app.overlay import display_factor, draw_overlays
from app.security import new_folder
from app.session_io import Session
from app.ui_guard import guarded
from app.ui_views import everything, image_file
from earthgpt.geometry import Detection
from earthgpt.raster import Tile

PRIVATE = {"api_visibility": "private"}
"""For events only the page triggers (a tab opened, a row clicked, a box dragged)."""
TOOL_JS = """(value) => {
  const tool = value && value.boxes && value.boxes.length ? 'Drag boxes' : 'Create box';
  const button = document.querySelector(`#review-annotator button[aria-label="${tool}"]`);
  if (button) button.click();
  return [];
}"""
"""Browser-side: the editor's tool follows its value, dragging a box when one is shown and drawing
one when none is (the annotator itself picks its tool only once, when it first appears)."""
EDITOR_MIN_SIDE = 480
"""A window image smaller than this is enlarged in the box editor (as in the chat view)."""
EDITOR_COLOUR = (255, 255, 0)
COLUMN_WIDTHS = ("5%", "16%", "13%", "10%", "9%", "18%", "10%", "19%")
"""Widths of the review table's :data:`app.annotations.COLUMNS`."""


def review_image(session: Session) -> np.ndarray | None:
    """The window with every annotation drawn and numbered (``?``: pending), for the box editor."""
    if session.view is None or session.window is None:
        return None
    view = session.view
    factor = display_factor((view.shape[1], view.shape[0]), EDITOR_MIN_SIDE)
    if factor > 1:
        view = view.repeat(factor, axis=0).repeat(factor, axis=1)
    numbered = [Detection(f"#{n} {f.detection.label}" + (" ?" if f.status == "pending" else ""),
                          f.detection.box) for n, f in enumerate(session.found, 1)]
    return draw_overlays(view, numbered, Tile(*session.window), layers=("HBB", "OBB", "Labels"))


def _editor_value(session: Session, text: str) -> dict[str, Any] | None:
    image = review_image(session)
    if image is None:
        return None
    box = A.editor_box(session, text, (image.shape[1], image.shape[0])) if text else None
    return {"image": image_file(image), "boxes": [box] if box else []}


def _picked(session: Session, number: Any) -> int | None:
    try:
        number = int(number)
    except (TypeError, ValueError):
        return None
    return number if 1 <= number <= len(session.found) else None


def review_values(session: Session, number: Any = None, model_name: str = "") -> tuple[Any, ...]:
    """New values of the review components (the order of ``c.review_views``: the picked number
    first) with annotation ``number`` picked (None: none picked, the form empty)."""
    number = _picked(session, number)
    rows = A.review_rows(session, model_name) if session.info is not None else []
    label = note = text = ""
    angle = 0.0
    if number is not None:
        item = session.found[number - 1]
        label, note = item.detection.label, A.description(session, item)
        if A.in_window(session, item.detection.box):
            text, angle = A.box_text(session, item.detection.box)
    picker = gr.update(choices=A.choices(session), value=number)
    summary = A.review_summary(session) if session.found else "No detections yet: ask for some, or draw one."
    return (number, rows, picker, label, note, text, angle, _editor_value(session, text), summary)


def review_panel(c: SimpleNamespace) -> None:
    """The Review tab's components, stored on ``c`` (``c.review_views`` in :func:`review_values` order)."""
    c.review_picked = gr.State(None)  # the picked annotation's number, kept on the server
    c.review_summary = gr.Markdown("No detections yet.", elem_id="review-summary")
    c.review_annot = image_annotator(
        label="Box editor: drag the yellow box or its corners; 'Create box' (C) draws a new one",
        single_box=True, label_list=["box"], label_colors=[EDITOR_COLOUR], use_default_label=True,
        disable_edit_boxes=True, sources=[], elem_id="review-annotator", show_clear_button=False, height=400)
    c.review_table = gr.Dataframe(headers=list(A.COLUMNS), value=[], interactive=False, wrap=True,
                                  column_widths=list(COLUMN_WIDTHS), max_height=240,
                                  label="Annotations: click a row to pick it", elem_id="review-table")
    with gr.Row():
        c.review_pick = gr.Dropdown([], label="Picked", elem_id="review-pick", scale=2, min_width=160,
                                    allow_custom_value=True)  # a number from the API: checked by _picked
        c.review_accept = gr.Button("Accept", size="sm", elem_id="review-accept", scale=1, min_width=70)
        c.review_accept_all = gr.Button("Accept all pending", size="sm", elem_id="review-accept-all", scale=1,
                                        min_width=90)
        c.review_delete = gr.Button("Delete", size="sm", variant="stop", elem_id="review-delete", scale=1,
                                    min_width=70)
    with gr.Row():
        c.review_label = gr.Textbox(label="Class", placeholder="ship", elem_id="review-label", min_width=120)
        c.review_note = gr.Textbox(label="Description (trains grounding and region captions)", scale=2,
                                   placeholder="the large ship at the pier", elem_id="review-note")
    with gr.Row(equal_height=True):
        c.review_box = gr.Textbox(label="Box on the window's 0–1000 grid (4 numbers, or 8 corners)", scale=3,
                                  placeholder="[120, 80, 460, 390]", elem_id="review-box")
        c.review_angle = gr.Number(0, label="Rotation ° (clockwise; 0 = HBB)", elem_id="review-angle",
                                   scale=1, min_width=110)
    with gr.Row():
        c.review_apply = gr.Button("Apply to the picked one", variant="primary", elem_id="review-apply")
        c.review_add = gr.Button("Add as new box", elem_id="review-add")
        c.mmrs_btn = gr.Button("Export MMRS training records", elem_id="export-mmrs")
    c.mmrs_note = gr.Markdown("", elem_id="mmrs-note")
    c.mmrs_file = gr.File(label="Training records (zip)", interactive=False, elem_id="mmrs-download")
    c.review_views = [c.review_picked, c.review_table, c.review_pick, c.review_label, c.review_note,
                      c.review_box, c.review_angle, c.review_annot, c.review_summary]

Step = Callable[..., tuple[Session, int | None, str]]
"""A review action: ``(session, number, label, note, box text, angle)`` → new session, the
annotation to keep picked, the status line."""


def _need(number: int | None) -> int:
    if number is None:
        raise H.UserError("pick an annotation first (click its row in the table, or use the picker)")
    return number


def _accept(session: Session, number: int | None, *_: Any) -> tuple[Session, int | None, str]:
    return A.accept(session, [_need(number)]), number, f"Accepted #{number}."


def _accept_all(session: Session, number: int | None, *_: Any) -> tuple[Session, int | None, str]:
    new = A.accept_all(session)
    done = sum(a.status != b.status for a, b in zip(session.found, new.found, strict=True))
    left = sum(f.status == "pending" for f in new.found)
    return new, number, f"Accepted {done}." + (f" {left} without a class stay pending." if left else "")


def _delete(session: Session, number: int | None, *_: Any) -> tuple[Session, int | None, str]:
    return A.delete(session, _need(number)), None, f"Deleted #{number}."


def _apply(session: Session, number: int | None, label: str, note: str, text: str,
           angle: float) -> tuple[Session, int | None, str]:
    return A.apply(session, _need(number), label, note, text, angle), number, f"Updated #{number}."


def _add(session: Session, _number: int | None, label: str, note: str, text: str,
         angle: float) -> tuple[Session, int | None, str]:
    new = A.add_box(session, label, text, angle, note)
    return new, len(new.found), f"Added #{len(new.found)} ({new.found[-1].detection.label}, analyst)."


def _dragged(session: Session, value: dict[str, Any] | None, text: str) -> Any:
    """The grid text of a box dragged in the editor; unchanged for the editor's own redraws."""
    if session.info is None or not value or not value.get("boxes") or value.get("image") is None:
        return gr.skip()
    size = (value["image"].shape[1], value["image"].shape[0])
    box = value["boxes"][-1]
    if min(abs(box["xmax"] - box["xmin"]), abs(box["ymax"] - box["ymin"])) < 1:
        return gr.skip()  # a drag just starting
    shown = A.editor_box(session, text, size) if text else None
    if shown and all(abs(shown[k] - box[k]) <= 1 for k in ("xmin", "ymin", "xmax", "ymax")):
        return gr.skip()
    return A.text_from_editor(session, box, size)


def wire_review(c: SimpleNamespace, engine: H.Engine) -> None:
    """Connect the Review tab (``c.review_tab``, made by :func:`review_panel`) to the session;
    every action also redraws ``c.views`` (:func:`app.ui_views.everything`, the status box last)."""
    outputs = [*c.views[:-1], *c.review_views, c.status]

    def values(session: Session, number: Any = None) -> tuple[Any, ...]:
        return review_values(session, number, engine.name)

    form = [c.state, c.review_picked, c.review_label, c.review_note, c.review_box, c.review_angle]

    def act(step: Step) -> Callable[..., tuple[Any, ...]]:
        def go(session: Session, number: Any, label: str, note: str, text: str, angle: float) -> tuple:
            new, keep, status = step(session, _picked(session, number), label, note, text, angle)
            return (*everything(new, status)[:-1], *values(new, keep), status)
        return guarded(go, len(outputs))

    actions = ((c.review_accept, _accept, "review_accept"),
               (c.review_accept_all, _accept_all, "review_accept_all"),
               (c.review_delete, _delete, "review_delete"), (c.review_apply, _apply, "review_apply"),
               (c.review_add, _add, "review_add"))
    for button, step, name in actions:
        button.click(act(step), form, outputs, api_name=name)

    refresh = guarded(values, len(c.review_views))

    def follow(session: Session, number: Any) -> tuple[Any, ...]:
        """The table after the session changed elsewhere. It runs after the event that changed it, so
        the pick it was given may be stale: when none was picked then, a pick made since (a click
        on a row) is kept, not cleared."""
        new = values(session, number)
        if _picked(session, number) is not None:
            return new
        out = []
        for view, value in zip(c.review_views, new, strict=True):
            if view is c.review_table or view is c.review_summary:
                out.append(value)
            elif view is c.review_pick:
                out.append(gr.update(choices=A.choices(session)))
            else:
                out.append(gr.skip())  # the pick and its form stay as they are
        return tuple(out)

    c.review_pick.input(refresh, [c.state, c.review_pick], c.review_views, api_name="review_pick")
    c.review_tab.select(refresh, [c.state, c.review_picked], c.review_views, **PRIVATE)
    c.info.change(guarded(follow, len(c.review_views)), [c.state, c.review_picked], c.review_views,
                  show_progress="hidden", **PRIVATE)

    def pick_row(session: Session, evt: gr.SelectData) -> tuple[Any, ...]:
        return values(session, evt.index[0] + 1)

    c.review_table.select(guarded(pick_row, len(c.review_views)), [c.state], c.review_views, **PRIVATE)
    c.review_annot.change(guarded(_dragged, 1), [c.state, c.review_annot, c.review_box], [c.review_box],
                          show_progress="hidden", **PRIVATE)
    c.review_annot.change(None, [c.review_annot], None, js=TOOL_JS, **PRIVATE)

    def export(session: Session, request: gr.Request) -> tuple[str, str, str]:
        path, note = H.export_file(session, new_folder(request.session_hash, "exports"), engine.name, "mmrs")
        return str(path), note, f"Exported {path.name}."

    c.mmrs_btn.click(guarded(export, 3), [c.state], [c.mmrs_file, c.mmrs_note, c.status],
                     api_name="export_mmrs")
