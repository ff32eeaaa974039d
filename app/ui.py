"""The Gradio layout: components only. Their wiring to :mod:`app.handlers` is :mod:`app.ui_wiring`,
the values they show :mod:`app.ui_views`, the page's CSS and JS :mod:`app.page`.

The page an analyst works in, from 1280 × 800 up: a top bar with the status line; a sidebar to
open an image (collapsible); the image on the left (the window the model sees, where a drag draws
a region, and the map) beside the tools on the right (chat, whole-scene detection, export). Each
browser tab gets its own :class:`~app.session_io.Session` in a ``gr.State``; the model
(:class:`~app.handlers.Engine`) is shared and read-only.
"""

from __future__ import annotations

import html
from types import SimpleNamespace

import gradio as gr
from gradio_image_annotation import image_annotator

from app import handlers as H
from app.demo_tiles import demo_tiles
from app.overlay import LAYERS
from app.page import map_listener, page_head, page_script
from app.review_ui import review_panel, wire_review
from app.scene_ui import scene_panel, wire_scene
from app.security import remove_on_unload
from app.session_io import Session
from app.ui_wiring import QUICK_TASKS, wire
from earthgpt.sensors import Sensor

THEME_FONTS = {"font": ["ui-sans-serif", "system-ui", "sans-serif"],
               "font_mono": ["ui-monospace", "monospace"]}
CHAT_HEIGHT = "max(240px, calc(100vh - 350px))"
"""The conversation's height: what the top bar, tabs, prompt and quick tasks leave of the viewport."""


def theme() -> gr.themes.Base:
    """The app's theme, with system fonts so the page loads nothing from the internet."""
    return gr.themes.Default(**THEME_FONTS)


def build(engine: H.Engine) -> gr.Blocks:
    """The whole app for one loaded model."""
    demos = demo_tiles()
    c = SimpleNamespace()
    # Gradio's own cache (copies of exports and display images) is swept hourly of files a day old,
    # like the idle session folders (app/security.py), so a long-running server does not fill its disk.
    with gr.Blocks(title="EarthGPT analyst", fill_width=True, delete_cache=(3600, 86400)) as demo:
        c.state = gr.State(Session())
        c.map_shown = gr.State("")  # app.maps.map_key of the map on screen
        c.panels_for = gr.State("")  # the image the typed region and the download panel belong to
        c.overview_timer = gr.Timer(2.0, active=False)  # on while a quick preview awaits the full overview
        with gr.Row(elem_id="topbar", equal_height=True):
            gr.HTML(f"<h2>EarthGPT analyst · model <code>{html.escape(engine.name)}</code></h2>",
                    head=page_head(), js_on_load=page_script(), elem_id="title", scale=0, min_width=240)
            c.status = gr.Textbox("Open an image or a demo tile (left panel) to begin.", show_label=False,
                                  interactive=False, container=False, lines=2, max_lines=2, elem_id="status",
                                  scale=1)
        if engine.warning:
            gr.Markdown(H.engine_banner(engine), elem_id="untrained-warning")
        with gr.Sidebar(label="Image", open=True, width=320, elem_id="sidebar"):
            _image_panel(c, demos)
        with gr.Row(elem_id="workspace"):
            with gr.Column(scale=3, min_width=420, elem_id="views"), gr.Tabs(elem_id="view-tabs"):
                with gr.Tab("Image", id="image"):
                    _window_panel(c)
                with gr.Tab("Map", id="map") as c.map_tab:
                    _map_panel(c)
                with gr.Tab("Review", id="review") as c.review_tab:
                    review_panel(c)
            with gr.Column(scale=2, min_width=380, elem_id="tools"), gr.Tabs(elem_id="tool-tabs"):
                with gr.Tab("Chat", id="chat"):
                    _chat_panel(c)
                with gr.Tab("Whole scene", id="scene"):
                    scene_panel(c)
                with gr.Tab("Export & session", id="export"):
                    _export_panel(c)
        c.views = [c.state, c.annot, c.overview, c.chatbot, c.parsed, c.info, c.status]
        wire(c, engine, demos)
        wire_scene(c, engine)
        wire_review(c, engine)
    remove_on_unload(demo)  # each session's uploads and exports go when it ends (app/security.py)
    return demo


def _image_panel(c: SimpleNamespace, demos: dict) -> None:
    # no file_types: an upload is judged by its content (app/security.py), so a JPEG 2000 opens and
    # a wrong file gets a one-line warning instead of Gradio's refusal by name (review of 2026-12-04)
    c.upload = gr.File(label="Open a GeoTIFF, JPEG 2000, PNG or JPEG", type="filepath", height=150,
                       elem_id="upload")
    with gr.Row():
        c.demo_pick = gr.Dropdown(list(demos), value=next(iter(demos)), label="Demo tile", scale=3,
                                  elem_id="demo-pick")
        c.demo_btn = gr.Button("Open demo", scale=1, elem_id="open-demo")
    with gr.Row():
        sensors = [("detect (auto)", "auto"), *[(s.value, s.value) for s in Sensor]]
        c.sensor = gr.Dropdown(sensors, value="auto", label="Sensor of your files", elem_id="sensor")
        c.bands = gr.Textbox(label="Bands (e.g. 4,3,2)", placeholder="automatic")
    c.apply_btn = gr.Button("Apply sensor / bands", size="sm")
    c.info = gr.Markdown("No image loaded.", elem_id="info")
    c.overview = gr.Image(label="Overview: click to move the window", interactive=False, height=240,
                          elem_id="overview")
    with gr.Row():
        sizes = [str(s) for s in H.WINDOW_SIZES]
        c.size = gr.Dropdown(sizes, value=str(H.DEFAULT_WINDOW), label="Window size (px)")
        c.grid = gr.Dropdown([], label="Grid window")


def _window_panel(c: SimpleNamespace) -> None:
    c.annot = image_annotator(label="Window the model sees: drag to draw a region", label_list=["region"],
                              label_colors=[(255, 255, 255)], use_default_label=True, disable_edit_boxes=True,
                              sources=[], elem_id="annotator", show_clear_button=False, box_min_size=4)
    with gr.Row(elem_id="region-row"):
        c.typed = gr.Textbox(label="Region on the 0–1000 grid", placeholder="[120, 80, 460, 390]", scale=2,
                             elem_id="typed-region")
        c.typed_btn = gr.Button("Use typed box", size="sm", scale=1, min_width=100, elem_id="use-typed")
        c.clear_region_btn = gr.Button("Clear region", size="sm", scale=1, min_width=100,
                                       elem_id="clear-region")
    with gr.Row(elem_id="layers-row"):
        c.layers = gr.CheckboxGroup(list(LAYERS), value=list(LAYERS), label="Overlay layers", scale=3)
        c.clear_found_btn = gr.Button("Clear detections", size="sm", scale=1, elem_id="clear-detections")


def _map_panel(c: SimpleNamespace) -> None:
    c.map_html = gr.HTML("<p>Load an image to see it on the map.</p>", elem_id="map",
                         js_on_load=map_listener())
    with gr.Row():
        c.basemap = gr.Checkbox(False, label="OpenStreetMap basemap (needs internet)")
        c.map_btn = gr.Button("Redraw map", size="sm", elem_id="map-refresh")
    gr.Markdown("The □ button on the map draws a region: drag a box over the image.")


def _chat_panel(c: SimpleNamespace) -> None:
    c.chatbot = gr.Chatbot(label="Conversation", height=CHAT_HEIGHT, elem_id="chatbot")
    with gr.Row(equal_height=True):
        c.prompt = gr.Textbox(show_label=False, placeholder="Ask about the window…", scale=4,
                              elem_id="prompt")
        c.send = gr.Button("Send", variant="primary", scale=1, min_width=80, elem_id="send")
    with gr.Row(elem_id="quick-tasks"):
        c.quick = [gr.Button(label, size="sm", elem_id=f"task-{task.value}") for label, task in QUICK_TASKS]
    c.classes = gr.Textbox(label="Classes for detection (optional)", placeholder="ship, plane")
    with gr.Accordion("Raw answer and parsed result", open=True):
        c.parsed = gr.Markdown("No answer yet.", elem_id="parsed")


def _export_panel(c: SimpleNamespace) -> None:
    with gr.Row():
        c.geojson_btn = gr.Button("Export GeoJSON", elem_id="export-geojson")
        c.gpkg_btn = gr.Button("Export GeoPackage", elem_id="export-gpkg")
        c.save_btn = gr.Button("Save session", elem_id="save-session")
    c.out_file = gr.File(label="Download", interactive=False, elem_id="download")
    c.export_note = gr.Markdown("", elem_id="export-note")
    c.session_file = gr.File(label="Reopen a saved session (.json)", file_types=[".json"], type="filepath",
                             elem_id="session-file")
    c.repoint_file = gr.File(label="Session image moved? Pick the image here to reopen the session with it",
                             type="filepath", elem_id="repoint")
