"""The UI's events: which handler of :mod:`app.handlers` each component calls, with which inputs
and outputs. ``c`` is the namespace of components :func:`app.ui.build` lays out; ``c.views`` the
components every session change updates (:mod:`app.ui_views`). Every handler runs guarded
(:mod:`app.ui_guard`): an error is a warning and a status line, and the app keeps running. Files
come and go through the session's own folder (:mod:`app.security`, found by Gradio's session
hash): uploads are checked by content and kept there, exports written there, and a reopened
session reads its image only from there, the bundled demos or the image store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import SimpleNamespace

import gradio as gr

from app import handlers as H
from app import security as S
from app import ui_views as V
from app.demo_tiles import open_demo
from app.map_region import region_from_map, region_grid_text, region_status
from app.maps import map_key, session_map
from app.session_files import open_session_file, repoint_session, save_session_file
from app.session_io import Session
from app.ui_guard import EXPECTED, error_text, guarded, guarded_stream, user_warning
from earthgpt.tasks import Task

PRIVATE = {"api_visibility": "private"}
"""For events only the page triggers (a click on the overview, a drag, a tab opened): not part of the
app's API (docs/APP_API.md lists the named endpoints)."""
CHAT_TURNS = "chat-turns"
"""The one concurrency group of every event that adds a turn to a conversation (Send, Enter, the
quick tasks): with the queue's limit of 1 they run one after another, and a second one clicked while
an answer streams waits and then reads the session the first one left (Gradio reads a ``gr.State``
when the event starts). Two events in separate groups both took the session as it was before either
answered, and the one that ended last wrote its session back without the other's turn (review of
2026-12-04). The answers come from one model on the same cores, so this costs no throughput."""
QUICK_TASKS = (
    ("Classify", Task.classification), ("Caption", Task.caption), ("Detect HBB", Task.detection_hbb),
    ("Detect OBB", Task.detection_obb), ("Ask (VQA)", Task.vqa), ("Find (grounding)", Task.grounding),
    ("Describe region", Task.region_caption),
)


def wire(c: SimpleNamespace, engine: H.Engine, demos: dict) -> None:
    """Connect every component's events (called once by :func:`app.ui.build`)."""
    _wire_image(c, demos)
    _wire_repoint(c)
    _wire_overview(c)
    _wire_clear_detections(c)
    _wire_region(c)
    _wire_chat(c, engine)
    _wire_map(c, engine)
    _wire_outputs(c, engine)


def panels_after_open(session: Session, panels_for: str) -> tuple:
    """After an image opens (or a session reopens): the image the panels now belong to, the typed
    region (the session's own, or empty), and the download panel emptied; all unchanged when the
    image is the one they belong to (a failed open, a sensor change). Review of 2026-12-04: *Use
    typed box* applied the previous image's box to the new one, and its export stayed offered."""
    if session.path == panels_for:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return session.path or "", region_grid_text(session) if session.region else "", None, ""


def _wire_image(c: SimpleNamespace, demos: dict) -> None:
    n = len(c.views)
    unchanged = (gr.skip(),) * (n - 1)

    def open_upload(session: Session, path: str | None, sensor: str, band_text: str,
                    request: gr.Request) -> tuple:
        if not path:
            return (*unchanged, gr.skip(), "No file.")
        try:
            kept = S.take_upload(path, request.session_hash)
            opened = S.pair_with_open_image(kept, session.path, request.session_hash)
            new = H.load_image(session, opened, sensor=V.sensor_choice(sensor),
                               bands=H.parse_bands(band_text))
        except EXPECTED as err:  # the upload box empties; what was open stays open, and says so
            still = f" {session.name} is still loaded." if session.info is not None else ""
            return (*unchanged, None, user_warning(f"{error_text(err)}.{still}"))
        paired = f"with {kept.name}, just uploaded, as its second polarisation"
        shown = V.loaded(new, "upload" if opened == kept else paired)
        return (*shown[:-1], None, shown[-1])

    def pick_demo(session: Session, key: str) -> tuple:
        if key not in demos:
            raise H.UserError(f"unknown demo tile {key!r}; expected one of {', '.join(demos)}")
        return V.loaded(open_demo(session, demos[key]), demos[key].description)

    def apply(session: Session, sensor: str, band_text: str) -> tuple:
        H.require_image(session)
        new = H.load_image(session, session.path, sensor=V.sensor_choice(sensor),
                           bands=H.parse_bands(band_text), name=session.name)
        return V.loaded(new, f"sensor {new.sensor}")

    def click(session: Session, window_size: str, evt: gr.SelectData) -> tuple:
        x, y = evt.index
        return V.everything(H.click_overview(session, x, y, int(window_size)), "Window moved.")

    def pick(session: Session, window_size: str, label: str | None) -> tuple:
        if not label:
            return (*unchanged, "")
        window = H.grid_windows(session, int(window_size))[int(label.split(":")[0])]
        return V.everything(H.set_window(session, *window), f"Window {label}.")

    def reopen(session: Session, path: str | None, request: gr.Request) -> tuple:
        if not path:
            return (*unchanged, "")
        S.check_session_content(path)
        roots = S.readable_roots(request.session_hash)
        return V.everything(open_session_file(path, roots), "Session reopened.")

    grid_out = ([c.state, c.size], [c.grid, c.overview_timer, c.status])
    refresh_grid = guarded(lambda s, z: (V.grid_choices(s, z), _refining(s), gr.skip()), 3)
    panels = [c.panels_for, c.typed, c.out_file, c.export_note]

    def then_both(session: Session, size: str, panels_for: str) -> tuple:
        return (*refresh_grid(session, size), *panels_after_open(session, panels_for))

    then_grid = {"fn": then_both, "inputs": [*grid_out[0], c.panels_for], "outputs": [*grid_out[1], *panels],
                 **PRIVATE}
    upload_out = [*c.views[:-1], c.upload, c.status]
    c.upload.upload(guarded(open_upload, n + 1), [c.state, c.upload, c.sensor, c.bands], upload_out,
                    api_name="open_image").then(**then_grid)
    c.demo_btn.click(guarded(pick_demo, n), [c.state, c.demo_pick], c.views, api_name="open_demo").then(
        **then_grid)
    c.apply_btn.click(guarded(apply, n), [c.state, c.sensor, c.bands], c.views, api_name="apply_sensor").then(
        **then_grid)
    c.session_file.upload(guarded(reopen, n), [c.state, c.session_file], c.views,
                          api_name="reopen_session").then(**then_grid)
    c.overview.select(guarded(click, n), [c.state, c.size], c.views, **PRIVATE)
    c.size.change(refresh_grid, *grid_out, **PRIVATE)
    c.grid.input(guarded(pick, n), [c.state, c.size, c.grid], c.views, api_name="pick_window")
    set_layers = guarded(lambda s, chosen: V.everything(H.set_layers(s, chosen), ""), n)
    c.layers.change(set_layers, [c.state, c.layers], c.views, api_name="set_layers")


def _wire_repoint(c: SimpleNamespace) -> None:
    """*Session image moved?*: reopen the saved session with the image the analyst picks, if it is the
    same image (:func:`app.session_files.repoint_session`)."""

    def repoint(session_file: str | None, image: str | None, request: gr.Request) -> tuple:
        if not image:
            return (*(gr.skip(),) * len(c.views), "")
        if session_file:
            S.check_session_content(session_file)
        kept = S.take_upload(image, request.session_hash)
        shown = V.everything(repoint_session(session_file, kept), "Session reopened with the image picked.")
        return (*shown[:-1], None, shown[-1])

    c.repoint_file.upload(guarded(repoint, len(c.views) + 1), [c.session_file, c.repoint_file],
                          [*c.views[:-1], c.repoint_file, c.status], api_name="repoint_session").then(
        guarded(lambda s, z: (V.grid_choices(s, z), _refining(s), gr.skip()), 3), [c.state, c.size],
        [c.grid, c.overview_timer, c.status], **PRIVATE)


def _refining(session: Session) -> gr.Timer:
    """The overview timer, ticking while a quick preview awaits the full overview."""
    return gr.Timer(active=bool(session.overview_builds))


def _wire_overview(c: SimpleNamespace) -> None:
    """A quick preview of a big raster is replaced by the full overview on the timer's first tick
    after its build is done (:func:`app.handlers.refine_overview`); the timer then stops."""
    outputs = [*c.views[:-1], c.overview_timer, c.status]

    def tick(session: Session) -> tuple:
        done = H.refine_overview(session)
        if done is None:
            return (*(gr.skip(),) * (len(outputs) - 2), _refining(session), gr.skip())
        new, status = done
        return (*V.everything(new, status)[:-1], _refining(new), status or gr.skip())

    c.overview_timer.tick(guarded(tick, len(outputs)), [c.state], outputs, show_progress="hidden", **PRIVATE)


def _wire_clear_detections(c: SimpleNamespace) -> None:
    """*Clear detections*: the model's unreviewed detections go (accepted and analyst boxes and the
    conversation stay); overlays, table and map follow."""

    def clear(session: Session) -> tuple:
        after = H.clear_detections(session)
        count, kept = len(session.found) - len(after.found), len(after.found)
        cleared = f"{count} detection{'s' if count != 1 else ''} cleared; the conversation stays"
        cleared += f", and so do {kept} reviewed box{'es' if kept != 1 else ''}." if kept else "."
        return V.everything(after, cleared)

    c.clear_found_btn.click(guarded(clear, len(c.views)), [c.state], c.views, api_name="clear_detections")

    def forget(session: Session) -> tuple:
        after = H.clear_conversation(session)
        kept = sum(f.source == "chat" for f in after.found)
        note = f"; its {kept} detection{'s' if kept != 1 else ''} stay" if kept else ""
        return V.everything(after, f"Conversation cleared: the model starts afresh about this window{note}.")

    # the chat's own clear (trash) button: the conversation goes, not only its display (review of
    # 2026-12-04: the turns came back with the next answer, and the model still had them)
    c.chatbot.clear(guarded(forget, len(c.views)), [c.state], c.views, concurrency_id=CHAT_TURNS, **PRIVATE)


def _region_outputs(session: Session, where: str) -> tuple:
    """``views`` and the typed-region box after the region changed (``where``: how it was drawn)."""
    return (*V.everything(session, "")[:-1], region_grid_text(session), region_status(session, where))


def _wire_region(c: SimpleNamespace) -> None:
    """The region: dragged on the window image, typed on the grid, cleared, or drawn on the map."""
    outputs = [*c.views[:-1], c.typed, c.status]
    n = len(outputs)

    def draw(session: Session, value: dict | None) -> tuple:
        boxes = (value or {}).get("boxes") or []
        if session.info is None or not boxes:  # our own redraw carries no boxes
            return (gr.skip(),) * n
        newest = boxes[0]  # the annotator puts each new box first
        if min(abs(newest["xmax"] - newest["xmin"]), abs(newest["ymax"] - newest["ymin"])) < 1:
            return (gr.skip(),) * n  # a drag just starting
        image = value.get("image")
        shown = (image.shape[1], image.shape[0]) if image is not None else None
        return _region_outputs(H.draw_region(session, [newest], shown), "on the image")

    def on_map(session: Session, evt: gr.SelectData) -> tuple:
        south, west, north, east = (float(v) for v in evt.index)
        return _region_outputs(region_from_map(session, south, west, north, east), "on the map")

    c.annot.change(guarded(draw, n), [c.state, c.annot], outputs, show_progress="hidden", **PRIVATE)
    c.typed_btn.click(guarded(lambda s, t: _region_outputs(H.type_region(s, t), "from the typed box"), n),
                      [c.state, c.typed], outputs, api_name="set_region")
    c.typed.submit(guarded(lambda s, t: _region_outputs(H.type_region(s, t), "from the typed box"), n),
                   [c.state, c.typed], outputs, **PRIVATE)
    c.clear_region_btn.click(guarded(lambda s: _region_outputs(H.draw_region(s, None), ""), n),
                             [c.state], outputs, api_name="clear_region")
    c.map_html.select(guarded(on_map, n), [c.state], outputs, **PRIVATE)


def _wire_chat(c: SimpleNamespace, engine: H.Engine) -> None:
    n = len(c.views)

    def ask(session: Session, text: str) -> Iterator[tuple]:
        for out in V.stream(H.ask(session, engine, H.build_prompt(session, "ask", text) if text else text)):
            yield (*out[:-1], "", out[-1])  # the prompt box empties once the question is sent

    def run_task(task: str) -> Callable[..., Iterator[tuple]]:
        def go(session: Session, text: str, names: str) -> Iterator[tuple]:
            yield from V.stream(H.quick_task(session, engine, task, text, names))
        return go

    ask_out = [*c.views[:-1], c.prompt, c.status]
    one_turn = {"concurrency_id": CHAT_TURNS}
    c.send.click(guarded_stream(ask, n + 1), [c.state, c.prompt], ask_out, api_name="ask", **one_turn)
    c.prompt.submit(guarded_stream(ask, n + 1), [c.state, c.prompt], ask_out, **PRIVATE, **one_turn)
    for button, (_, task) in zip(c.quick, QUICK_TASKS, strict=True):
        button.click(guarded_stream(run_task(task.value), n), [c.state, c.prompt, c.classes], c.views,
                     api_name=f"task_{task.value}", **one_turn)


def _wire_map(c: SimpleNamespace, engine: H.Engine) -> None:
    """The map follows the session: redrawn whenever what it shows changes (a new image, new or
    fewer detections), whether or not its tab is open, and on demand."""

    def follow(session: Session, basemap: bool, shown: str) -> tuple:
        key = map_key(session, engine.name, basemap)
        if key == shown:
            return gr.skip(), gr.skip(), gr.skip()
        return session_map(session, engine.name, basemap), key, gr.skip()

    def redraw(session: Session, basemap: bool) -> tuple:
        key = map_key(session, engine.name, basemap)
        return session_map(session, engine.name, basemap), key, "Map drawn."

    outputs = [c.map_html, c.map_shown, c.status]
    c.state.change(guarded(follow, 3), [c.state, c.basemap, c.map_shown], outputs, show_progress="hidden",
                   trigger_mode="always_last", **PRIVATE)
    c.map_tab.select(guarded(follow, 3), [c.state, c.basemap, c.map_shown], outputs, show_progress="hidden",
                     **PRIVATE)
    c.map_btn.click(guarded(redraw, 3), [c.state, c.basemap], outputs, api_name="draw_map")
    c.basemap.change(guarded(redraw, 3), [c.state, c.basemap], outputs, **PRIVATE)


def _wire_outputs(c: SimpleNamespace, engine: H.Engine) -> None:
    def export(kind: str) -> Callable[..., tuple]:
        def go(session: Session, request: gr.Request) -> tuple:
            folder = S.new_folder(request.session_hash, "exports")
            path, note = H.export_file(session, folder, engine.name, kind)
            return str(path), note, f"Exported {path.name}."
        return go

    def save(session: Session, request: gr.Request) -> tuple:
        path = save_session_file(session, S.new_folder(request.session_hash, "exports"), engine.name)
        note = ("Session saved: the conversation, the detections and a reference to the image (a copy is "
                "kept on the server, so the session reopens after a restart).")
        return str(path), note, f"Saved {path.name}."

    file_out = [c.out_file, c.export_note, c.status]
    c.geojson_btn.click(guarded(export("geojson"), 3), [c.state], file_out, api_name="export_geojson")
    c.gpkg_btn.click(guarded(export("gpkg"), 3), [c.state], file_out, api_name="export_gpkg")
    c.save_btn.click(guarded(save, 3), [c.state], file_out, api_name="save_session")
