"""The Gradio layout: components and their wiring to :mod:`app.handlers`. No behaviour lives here.

Each browser tab gets its own :class:`~app.session_io.Session` in a ``gr.State``; the model
(:class:`~app.handlers.Engine`) is shared and read-only. Every handler error the analyst can act
on becomes a warning toast and a line in the status box; the app keeps running.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import gradio as gr
from gradio_image_annotation import image_annotator

from app import handlers as H
from app.demo_tiles import demo_tiles
from app.maps import session_map
from app.overlay import LAYERS, session_overview, session_view
from app.scene import run_scene_detection
from app.session_io import Session
from earthgpt.box_spaces import raster_to_image
from earthgpt.raster import RasterError, Tile
from earthgpt.sensors import Sensor
from earthgpt.tasks import Task

QUICK_TASKS = (
    ("Classify", Task.classification), ("Caption", Task.caption), ("Detect HBB", Task.detection_hbb),
    ("Detect OBB", Task.detection_obb), ("Ask (VQA)", Task.vqa), ("Find (grounding)", Task.grounding),
    ("Describe region", Task.region_caption),
)
EXPECTED = (H.UserError, RasterError, ValueError)
"""Errors with a message for the analyst; anything else is a bug and is shown as one."""
THEME_FONTS = {"font": ["ui-sans-serif", "system-ui", "sans-serif"],
               "font_mono": ["ui-monospace", "monospace"]}


def theme() -> gr.themes.Base:
    """The app's theme, with system fonts so the page loads nothing from the internet."""
    return gr.themes.Default(**THEME_FONTS)


def _annotator_value(session: Session) -> dict[str, Any] | None:
    image = session_view(session)
    if image is None:
        return None
    boxes = []
    if session.region is not None and session.window is not None:
        box = raster_to_image(session.region, Tile(*session.window), (image.shape[1], image.shape[0]))
        boxes.append({"xmin": round(box.x1), "ymin": round(box.y1), "xmax": round(box.x2),
                      "ymax": round(box.y2), "label": "region", "color": (255, 255, 255)})
    return {"image": image, "boxes": boxes}


def _everything(session: Session, status: str) -> tuple[Any, ...]:
    """New values for the components that show the session (the order of ``views`` in :func:`build`)."""
    return (session, _annotator_value(session), session_overview(session), H.chat_messages(session),
            H.parsed_markdown(session), H.info_markdown(session), status)


def _warn(err: Exception) -> str:
    message = str(err) if isinstance(err, EXPECTED) else f"unexpected error ({type(err).__name__}): {err}"
    gr.Warning(message)
    return f"⚠ {message}"


def guarded(fn: Callable[..., tuple[Any, ...]], outputs: int) -> Callable[..., tuple[Any, ...]]:
    """Run a handler; on error leave every output but the last (the status box) as it was."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # the app must keep running whatever a handler does
            return (*([gr.skip()] * (outputs - 1)), _warn(err))

    return run


def guarded_stream(
    fn: Callable[..., Iterator[tuple[Any, ...]]], outputs: int
) -> Callable[..., Iterator[tuple[Any, ...]]]:
    """:func:`guarded` for generator handlers (streamed answers)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Iterator[tuple[Any, ...]]:
        try:
            yield from fn(*args, **kwargs)
        except Exception as err:
            yield (*([gr.skip()] * (outputs - 1)), _warn(err))

    return run


def _stream(turns: Iterator[Session]) -> Iterator[tuple[Any, ...]]:
    session = None
    for session in turns:
        yield (session, gr.skip(), gr.skip(), H.chat_messages(session), gr.skip(), gr.skip(), "Answering…")
    if session is not None:
        yield _everything(session, f"Answered ({len(session.turns[-1].answer)} characters).")


def build(engine: H.Engine) -> gr.Blocks:
    """The whole app for one loaded model."""
    demos = demo_tiles()
    c = SimpleNamespace()
    with gr.Blocks(title="EarthGPT analyst") as demo:
        c.state = gr.State(Session())
        gr.Markdown(f"## EarthGPT analyst · model `{engine.name}`")
        if engine.warning:
            gr.Markdown(H.engine_banner(engine), elem_id="untrained-warning")
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                _image_panel(c, demos)
            with gr.Column(scale=2), gr.Tabs():
                with gr.Tab("Chat", id="chat"):
                    _chat_panel(c)
                with gr.Tab("Map", id="map"):
                    with gr.Row():
                        c.basemap = gr.Checkbox(False, label="OpenStreetMap basemap (needs internet)")
                        c.map_btn = gr.Button("Refresh map", elem_id="map-refresh")
                    c.map_html = gr.HTML("<p>Load an image to see it on the map.</p>", elem_id="map")
                with gr.Tab("Whole scene", id="scene"):
                    _scene_panel(c)
                with gr.Tab("Export & session", id="export"):
                    _export_panel(c)
        c.views = [c.state, c.annot, c.overview, c.chatbot, c.parsed, c.info, c.status]
        _wire_image(c, demos)
        _wire_chat(c, engine)
        _wire_outputs(c, engine)
    return demo


def _image_panel(c: SimpleNamespace, demos: dict) -> None:
    c.upload = gr.File(label="Open a GeoTIFF, PNG or JPEG", type="filepath",
                       file_types=[".tif", ".tiff", ".png", ".jpg", ".jpeg"])
    with gr.Row():
        c.demo_pick = gr.Dropdown(list(demos), value=next(iter(demos)), label="Demo tile", scale=3)
        c.demo_btn = gr.Button("Open demo", scale=1, elem_id="open-demo")
    with gr.Row():
        c.sensor = gr.Dropdown(["auto", *[s.value for s in Sensor]], value="auto", label="Sensor")
        c.bands = gr.Textbox(label="Bands (e.g. 4,3,2)", placeholder="automatic")
    c.apply_btn = gr.Button("Apply sensor / bands")
    c.info = gr.Markdown("No image loaded.", elem_id="info")
    c.overview = gr.Image(label="Overview: click to move the window", interactive=False, height=300,
                          elem_id="overview")
    with gr.Row():
        sizes = [str(s) for s in H.WINDOW_SIZES]
        c.size = gr.Dropdown(sizes, value=str(H.DEFAULT_WINDOW), label="Window size (px)")
        c.grid = gr.Dropdown([], label="Grid window")
    c.status = gr.Textbox(label="Status", interactive=False, elem_id="status")


def _chat_panel(c: SimpleNamespace) -> None:
    with gr.Row():
        c.annot = image_annotator(label="Window the model sees: drag to draw a region", single_box=True,
                                  label_list=["region"], label_colors=[(255, 255, 255)],
                                  use_default_label=True, disable_edit_boxes=True, sources=[],
                                  elem_id="annotator", show_clear_button=False, height=480)
        c.chatbot = gr.Chatbot(label="Conversation", height=480, elem_id="chatbot")
    with gr.Row():
        c.prompt = gr.Textbox(label="Prompt", placeholder="Ask about the window…", scale=4, elem_id="prompt")
        c.send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
    with gr.Row():
        c.quick = [gr.Button(label, size="sm", elem_id=f"task-{task.value}") for label, task in QUICK_TASKS]
    with gr.Row():
        c.classes = gr.Textbox(label="Classes for detection (optional)", placeholder="ship, plane")
        c.typed = gr.Textbox(label="Region on the 0–1000 grid", placeholder="[120, 80, 460, 390]")
        c.typed_btn = gr.Button("Use typed box", size="sm")
    c.layers = gr.CheckboxGroup(list(LAYERS), value=list(LAYERS), label="Overlay layers")
    with gr.Accordion("Raw answer and parsed result", open=True):
        c.parsed = gr.Markdown("No answer yet.", elem_id="parsed")


def _scene_panel(c: SimpleNamespace) -> None:
    with gr.Row():
        c.scene_classes = gr.Textbox(label="Classes (optional)", placeholder="ship, plane")
        c.scene_obb = gr.Checkbox(False, label="Oriented boxes (OBB)")
    with gr.Row():
        c.tile = gr.Number(512, label="Tile (px)", precision=0, minimum=64)
        c.overlap = gr.Number(64, label="Overlap (px)", precision=0, minimum=0)
        c.batch = gr.Number(4, label="Batch", precision=0, minimum=1)
    c.scene_btn = gr.Button("Detect over the whole scene", variant="primary", elem_id="scene-run")
    c.counts = gr.Markdown("", elem_id="counts")


def _export_panel(c: SimpleNamespace) -> None:
    with gr.Row():
        c.geojson_btn = gr.Button("Export GeoJSON", elem_id="export-geojson")
        c.gpkg_btn = gr.Button("Export GeoPackage", elem_id="export-gpkg")
        c.save_btn = gr.Button("Save session", elem_id="save-session")
    c.out_file = gr.File(label="Download", interactive=False, elem_id="download")
    c.export_note = gr.Markdown("", elem_id="export-note")
    c.session_file = gr.File(label="Reopen a saved session (.json)", file_types=[".json"], type="filepath")


def _same_region(a: Any, b: Any, tolerance: float = 2.0) -> bool:
    if a is None or b is None:
        return a is b
    return all(abs(x - y) <= tolerance for x, y in zip(a.as_list(), b.as_list(), strict=True))


def _loaded(session: Session, what: str) -> tuple[Any, ...]:
    return _everything(session, f"Opened {session.name} ({what}); a new conversation starts.")


def _choice(value: str | None) -> str | None:
    return None if value in (None, "", "auto") else value


def _grid_choices(session: Session, window_size: str) -> Any:
    if session.info is None:
        return gr.update(choices=[], value=None)
    windows = H.grid_windows(session, int(window_size))
    return gr.update(choices=[f"{i}: {c},{r} {w}×{h}" for i, (c, r, w, h) in enumerate(windows)], value=None)


def _wire_image(c: SimpleNamespace, demos: dict) -> None:
    n = len(c.views)
    unchanged = (gr.skip(),) * (n - 1)

    def open_upload(session: Session, path: str | None, sensor: str, band_text: str) -> tuple:
        if not path:
            return (*unchanged, "No file.")
        new = H.load_image(session, path, sensor=_choice(sensor), bands=H.parse_bands(band_text))
        return _loaded(new, "upload")

    def open_demo(session: Session, key: str) -> tuple:
        if key not in demos:
            raise H.UserError(f"unknown demo tile {key!r}; expected one of {', '.join(demos)}")
        tile = demos[key]
        return _loaded(H.load_image(session, tile.paths[0], sensor=tile.sensor.value), tile.description)

    def apply(session: Session, sensor: str, band_text: str) -> tuple:
        H.require_image(session)
        new = H.load_image(session, session.path, sensor=_choice(sensor), bands=H.parse_bands(band_text),
                           name=session.name)
        return _loaded(new, f"sensor {new.sensor}")

    def click(session: Session, window_size: str, evt: gr.SelectData) -> tuple:
        x, y = evt.index
        return _everything(H.click_overview(session, x, y, int(window_size)), "Window moved.")

    def pick(session: Session, window_size: str, label: str | None) -> tuple:
        if not label:
            return (*unchanged, "")
        window = H.grid_windows(session, int(window_size))[int(label.split(":")[0])]
        return _everything(H.set_window(session, *window), f"Window {label}.")

    def draw(session: Session, value: dict | None) -> tuple:
        if session.info is None or not value:
            return gr.skip(), gr.skip(), gr.skip()
        boxes = value.get("boxes") or []
        last = boxes[-1] if boxes else None
        if last and min(abs(last["xmax"] - last["xmin"]), abs(last["ymax"] - last["ymin"])) < 1:
            return gr.skip(), gr.skip(), gr.skip()  # a drag just starting
        new = H.draw_region(session, boxes)
        if _same_region(new.region, session.region, 1.0 + max(session.scale)):  # our own redraw
            return gr.skip(), gr.skip(), gr.skip()
        return new, H.info_markdown(new), "Region set." if new.region else "Region cleared."

    def reopen(session: Session, path: str | None) -> tuple:
        if not path:
            return (*unchanged, "")
        return _everything(H.open_session_file(path), "Session reopened.")

    grid_out = ([c.state, c.size], [c.grid, c.status])
    refresh_grid = guarded(lambda s, z: (_grid_choices(s, z), gr.skip()), 2)
    c.upload.upload(guarded(open_upload, n), [c.state, c.upload, c.sensor, c.bands], c.views).then(
        refresh_grid, *grid_out)
    c.demo_btn.click(guarded(open_demo, n), [c.state, c.demo_pick], c.views).then(refresh_grid, *grid_out)
    c.apply_btn.click(guarded(apply, n), [c.state, c.sensor, c.bands], c.views).then(refresh_grid, *grid_out)
    c.session_file.upload(guarded(reopen, n), [c.state, c.session_file], c.views).then(
        refresh_grid, *grid_out)
    c.overview.select(guarded(click, n), [c.state, c.size], c.views)
    c.size.change(refresh_grid, *grid_out)
    c.grid.input(guarded(pick, n), [c.state, c.size, c.grid], c.views)
    set_layers = guarded(lambda s, chosen: _everything(H.set_layers(s, chosen), ""), n)
    c.layers.change(set_layers, [c.state, c.layers], c.views)
    typed = guarded(lambda s, t: _everything(H.type_region(s, t), "Region set."), n)
    c.typed_btn.click(typed, [c.state, c.typed], c.views)
    c.annot.change(guarded(draw, 3), [c.state, c.annot], [c.state, c.info, c.status], show_progress="hidden")


def _wire_chat(c: SimpleNamespace, engine: H.Engine) -> None:
    n = len(c.views)

    def ask(session: Session, text: str) -> Iterator[tuple]:
        yield from _stream(H.ask(session, engine, text))

    def run_task(task: str) -> Callable[..., Iterator[tuple]]:
        def go(session: Session, text: str, names: str) -> Iterator[tuple]:
            yield from _stream(H.quick_task(session, engine, task, text, names))
        return go

    c.send.click(guarded_stream(ask, n), [c.state, c.prompt], c.views)
    c.prompt.submit(guarded_stream(ask, n), [c.state, c.prompt], c.views)
    for button, (_, task) in zip(c.quick, QUICK_TASKS, strict=True):
        button.click(guarded_stream(run_task(task.value), n), [c.state, c.prompt, c.classes], c.views)


def _counts_table(result: Any) -> str:
    rows = "\n".join(f"| {name} | {count} |" for name, count in result.counts().items()) or "| (none) | 0 |"
    return (f"**{len(result.detections)} objects** in {result.tiles} windows "
            f"({result.tiles_empty} empty, {result.lines_skipped} malformed lines skipped)\n\n"
            f"| class | count |\n|---|---|\n{rows}")


def _wire_outputs(c: SimpleNamespace, engine: H.Engine) -> None:
    n = len(c.views)

    def scene(session: Session, names: str, obb: bool, tile_px: float, overlap_px: float, size: float,
              progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008 - Gradio's progress idiom
        def report(done: int, total: int) -> None:
            progress(done / total, desc=f"{done}/{total} windows")

        new, result = run_scene_detection(session, engine, classes=names, obb=obb, tile=int(tile_px or 512),
                                          overlap=int(overlap_px or 0), batch=int(size or 1), progress=report)
        return (*_everything(new, "")[:-1], _counts_table(result), "Whole-scene detection done.")

    def export(kind: str) -> Callable[..., tuple]:
        def go(session: Session) -> tuple:
            path, note = H.export_file(session, tempfile.mkdtemp(prefix="earthgpt-"), engine.name, kind)
            return str(path), note, f"Exported {path.name}."
        return go

    def save(session: Session) -> tuple:
        path = H.save_session_file(session, tempfile.mkdtemp(prefix="earthgpt-"), engine.name)
        note = "Session saved: the conversation, the detections and the image's path."
        return str(path), note, f"Saved {path.name}."

    draw_map = guarded(lambda s, b: (session_map(s, engine.name, b), "Map drawn."), 2)
    c.map_btn.click(draw_map, [c.state, c.basemap], [c.map_html, c.status])
    c.basemap.change(draw_map, [c.state, c.basemap], [c.map_html, c.status])
    scene_inputs = [c.state, c.scene_classes, c.scene_obb, c.tile, c.overlap, c.batch]
    c.scene_btn.click(guarded(scene, n + 1), scene_inputs, [*c.views[:-1], c.counts, c.status]).then(
        draw_map, [c.state, c.basemap], [c.map_html, c.status])
    file_out = [c.out_file, c.export_note, c.status]
    c.geojson_btn.click(guarded(export("geojson"), 3), [c.state], file_out)
    c.gpkg_btn.click(guarded(export("gpkg"), 3), [c.state], file_out)
    c.save_btn.click(guarded(save, 3), [c.state], file_out)
