"""The app's behaviour as plain functions: a :class:`~app.session_io.Session` goes in, a new one
comes out. No Gradio here, so every step is tested without a server.

Coordinates: the model answers on the 0–1000 grid over the *window* it saw; answers are placed in
full-raster pixels at once (:func:`earthgpt.scene_detection.tile_to_raster`) and only drawn or exported
from there. The analyst's region is kept in full-raster pixels too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from rasterio.windows import Window

from app.session_io import Found, Session, Turn
from app.session_io import Window as WindowTuple
from earthgpt import raster
from earthgpt.box_checks import box_problem
from earthgpt.box_spaces import grid_to_raster, image_to_raster, raster_to_grid, raster_to_lonlat
from earthgpt.conversation import PromptTooLongError
from earthgpt.geometry import HBB, box_kind
from earthgpt.raster import Tile
from earthgpt.scene_detection import detection_stop_rule, tile_to_raster
from earthgpt.sensors import Sensor, colormap_display
from earthgpt.tasks import Task, instruction
from earthgpt.textbox import InvalidBox, format_box, parse_detections, read_box

VIEW_SIZE = 1024
"""Longest side, in pixels, of the window image shown and given to the model."""
OVERVIEW_SIZE = 768
WINDOW_SIZES = (256, 512, 1024, 2048, 4096)
DEFAULT_WINDOW = 1024


BOX_TASKS = (Task.detection_hbb, Task.detection_obb, Task.grounding)
"""Tasks whose answers are boxes: malformed box lines are reported only for these, and their
answers stop early when the model repeats itself (:func:`earthgpt.scene_detection.detection_stop_rule`)."""
MODEL_ERROR = "[model error:"
"""Marks the end of an answer a model error cut short."""


class UserError(ValueError):
    """Something the analyst can fix; the UI shows the message and carries on."""


class ChatLike(Protocol):
    """What the app needs from a chat with the model (``earthgpt.inference.ChatSession``)."""

    def set_image(self, rgb: np.ndarray) -> None: ...

    def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False, stop_rule: Any = None
            ) -> Any: ...

    def restore(self, exchanges: list[tuple[str, str]]) -> None: ...


@dataclass(frozen=True)
class Engine:
    """The loaded model as the handlers use it: shared by all sessions, holds no user state."""

    name: str
    new_chat: Callable[[Sensor | None], ChatLike]
    max_new_tokens: int = 256
    """Answer length limit of a chat turn."""
    scene_max_new_tokens: int = 512
    """Answer length limit per window of whole-scene detection (busy windows need long answers)."""
    scene_batch_size: int = 1
    """Windows of whole-scene detection answered together in one token loop, and between two
    progress updates (``app.py`` sets :data:`earthgpt.scene_detection.DEFAULT_BATCH_SIZE`)."""
    warning: str | None = None
    """Shown as a banner over the app, e.g. that the model is a preset's untrained start."""


def engine_banner(engine: Engine) -> str:
    """The Markdown banner for the engine's warning (``""`` when there is none)."""
    return f"> ⚠ **Warning: {engine.warning}**" if engine.warning else ""


def _fail(message: str) -> UserError:
    return UserError(message)


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    """The band box: ``"4,3,2"`` → ``(4, 3, 2)``, empty → None (see
    :func:`earthgpt.raster.parse_band_numbers`)."""
    try:
        return raster.parse_band_numbers(text)
    except ValueError as err:
        raise _fail(f"bands: {err}") from err


def _band_list(bands: tuple[int, ...] | None) -> list[int] | None:
    return list(bands) if bands else None


def _display(rgb: np.ndarray, sensor: str | None) -> np.ndarray:
    return colormap_display(rgb[..., 0]) if sensor == Sensor.infrared else rgb


def _default_window(info: raster.RasterInfo, size: int = DEFAULT_WINDOW) -> WindowTuple:
    width, height = min(size, info.width), min(size, info.height)
    return ((info.width - width) // 2, (info.height - height) // 2, width, height)


def load_image(
    session: Session, path: str | Path, *, sensor: str | None = None, bands: tuple[int, ...] | None = None,
    name: str | None = None,
) -> Session:
    """Open a raster: header, sensor (detected unless given), overview, and a first window.

    A raster of at most :data:`DEFAULT_WINDOW` pixels per side is one window; a larger one opens
    on a centred window. The conversation starts fresh. The overview of a big raster without
    overviews is a quick preview at first (:func:`earthgpt.raster.quick_overview`), replaced by the
    exact one when its background build is done (:func:`refine_overview`).
    """
    if not path:
        raise _fail("no file given: upload a GeoTIFF, PNG or JPEG, or pick a demo tile")
    info = raster.inspect(path)
    try:
        overview, meta = raster.load_for_model(path, None, sensor=sensor, bands=_band_list(bands),
                                               max_size=OVERVIEW_SIZE, quick=True)
    except ValueError as err:  # band choice or sensor that does not fit this raster
        raise _fail(str(err)) from err
    chosen = str(meta["sensor"])
    fresh = Session(path=str(path), name=name or Path(path).name, sensor=chosen, sensor_reason=meta["reason"],
                    bands=bands, info=info, overview=_display(overview, chosen),
                    overview_scale=tuple(meta["scale"]), overview_builds=meta["overview_builds"],
                    layers=session.layers)
    return set_window(fresh, *_default_window(info))


def refine_overview(session: Session) -> tuple[Session, str] | None:
    """The exact overview in place of the quick preview once its background builds are done, and a
    status line for it; None while they run or when no preview is shown. A failed build leaves the
    preview, and says so; a build dropped (too many at once) is started again."""
    builds = session.overview_builds
    if not builds or not all(build.done() for build in builds):
        return None
    failed = [build.exception() for build in builds if not build.cancelled() and build.exception()]
    if failed:
        return (dataclasses.replace(session, overview_builds=()),
                f"The full overview could not be built ({failed[0]}); the quick preview stays.")
    overview, meta = raster.load_for_model(session.path, None, sensor=session.sensor, quick=True,
                                           bands=_band_list(session.bands), max_size=OVERVIEW_SIZE)
    refined = dataclasses.replace(session, overview=_display(overview, session.sensor),
                                  overview_builds=meta["overview_builds"])
    return refined, "" if refined.overview_builds else "Full overview ready."


def set_window(session: Session, col_off: int, row_off: int, width: int, height: int) -> Session:
    """Read one window (clamped to the raster) as the image the model sees; a fresh conversation."""
    info = require_image(session)
    width, height = max(1, min(int(width), info.width)), max(1, min(int(height), info.height))
    col_off = min(max(0, int(col_off)), info.width - width)
    row_off = min(max(0, int(row_off)), info.height - height)
    window = Window(col_off, row_off, width, height)
    rgb, meta = raster.load_for_model(session.path, window, sensor=session.sensor,
                                      bands=_band_list(session.bands), max_size=VIEW_SIZE)
    return dataclasses.replace(session, window=(col_off, row_off, width, height), scale=tuple(meta["scale"]),
                               view=_display(rgb, session.sensor), model_image=rgb, chat=None, region=None)


def click_overview(session: Session, x: float, y: float, size: int) -> Session:
    """Centre a ``size``-pixel window on a click at ``(x, y)`` in the overview image."""
    require_image(session)
    sx, sy = session.overview_scale
    return set_window(session, round(x * sx - size / 2), round(y * sy - size / 2), size, size)


def grid_windows(session: Session, size: int, overlap: int = 0) -> list[WindowTuple]:
    """The raster cut in ``size``-pixel windows (for the window picker)."""
    info = require_image(session)
    return [(int(w.col_off), int(w.row_off), int(w.width), int(w.height))
            for w in raster.tile_grid(info.width, info.height, int(size), int(overlap))]


def require_image(session: Session) -> raster.RasterInfo:
    if session.info is None or not session.path:
        raise _fail("no image loaded: upload a file or pick a demo tile first")
    return session.info


def draw_region(
    session: Session, boxes: list[dict[str, Any]] | None, shown: tuple[int, int] | None = None
) -> Session:
    """The analyst's box drawn on the window image becomes the region: the last of ``boxes``
    (annotator boxes, in pixels of the image shown, ``shown = (width, height)``; default the
    window image itself, e.g. enlarged for display by :func:`app.overlay.session_view`)."""
    require_image(session)
    if not boxes:
        return dataclasses.replace(session, region=None)
    last = boxes[-1]
    x1, x2 = sorted((float(last["xmin"]), float(last["xmax"])))
    y1, y2 = sorted((float(last["ymin"]), float(last["ymax"])))
    if x2 - x1 < 1 or y2 - y1 < 1:
        raise _fail("the drawn box is empty: drag to draw a box with some width and height")
    window = Tile(*session.window)
    scale = (window.width / shown[0], window.height / shown[1]) if shown else session.scale
    region = image_to_raster(HBB(x1, y1, x2, y2), window, scale)
    return dataclasses.replace(session, region=region)


def type_region(session: Session, text: str) -> Session:
    """A region typed on the window's 0–1000 grid, ``[x1, y1, x2, y2]``."""
    require_image(session)
    box = read_box(text or "")
    if isinstance(box, InvalidBox):
        raise _fail(f"the box {box.text} is not usable ({box.reason}): expected a box on the 0–1000 grid "
                    "like [120, 80, 460, 390]")
    if not isinstance(box, HBB):
        raise _fail(f"expected a box on the 0–1000 grid like [120, 80, 460, 390]; got {text!r}")
    return dataclasses.replace(session, region=grid_to_raster(box, Tile(*session.window)))


REGION_QUESTION = "About the region {box} in the image: {question}"
"""A typed question while a region is drawn: the region enters the prompt on the window's 0–1000
grid, in the words of the region-caption instruction."""


def build_prompt(session: Session, task: str, text: str = "", classes: str = "") -> str:
    """The instruction for a quick task; ``ask`` sends the typed text as it is, about the drawn
    region when there is one (:data:`REGION_QUESTION`; VQA too)."""
    sensor = session.sensor
    task_text = (text or "").strip()
    if task == "ask":
        if not task_text:
            raise _fail("the prompt is empty: type a question first")
        return _about_region(session, task_text)
    names = [c.strip() for c in (classes or "").split(",") if c.strip()] or None
    if task == Task.vqa:
        if not task_text:
            raise _fail("type the question to ask first")
        return instruction(Task.vqa, sensor, question=_about_region(session, task_text))
    if task == Task.grounding:
        if not task_text:
            raise _fail("type what to find (e.g. 'the large ship on the left') first")
        return instruction(Task.grounding, sensor, referring=task_text)
    if task == Task.region_caption:
        if session.region is None:
            raise _fail("draw a box on the image (or type one on the 0–1000 grid) first")
        box = raster_to_grid(session.region, Tile(*session.window))
        return instruction(Task.region_caption, sensor, box=box)
    if task in (Task.detection_hbb, Task.detection_obb):
        return instruction(task, sensor, classes=names)
    return instruction(Task(task), sensor)


def _about_region(session: Session, question: str) -> str:
    """``question`` about the drawn region (:data:`REGION_QUESTION`), or as it is when no region
    is drawn, the question already holds a box, or the region lies outside the window."""
    if session.region is None or session.window is None or read_box(question) is not None:
        return question
    try:
        box = format_box(raster_to_grid(session.region, Tile(*session.window)))
    except ValueError:
        return question
    return REGION_QUESTION.format(box=box, question=question)


def _ensure_chat(session: Session, engine: Engine) -> Any:
    """The session's chat with the model; a new one (after a new window, a reopen, a model error)
    gets the earlier exchanges about this window back (:func:`conversation_so_far`)."""
    if session.chat is None:
        session.chat = engine.new_chat(Sensor(session.sensor) if session.sensor else None)
        session.chat.set_image(session.model_image)
        earlier = conversation_so_far(session.turns[:-1], session.window)
        if earlier:
            session.chat.restore(earlier)
    return session.chat


def conversation_so_far(turns: list[Turn], window: WindowTuple | None) -> list[tuple[str, str]]:
    """The exchanges, ``(prompt, answer)``, a chat about ``window`` continues: the last turns about
    that window (since the analyst last came to it), leaving out answers a model error cut short."""
    tail: list[Turn] = []
    for turn in reversed(turns):
        if turn.window != window:
            break
        tail.append(turn)
    return [(t.prompt, t.answer) for t in reversed(tail) if MODEL_ERROR not in t.answer]


def ask(session: Session, engine: Engine, prompt: str, task: str = "ask") -> Iterator[Session]:
    """Send ``prompt`` about the current window; yields a new session as each piece streams in.

    When the answer is complete its boxes are parsed and placed in full-raster pixels. A model
    error ends the turn with the message in the answer; nothing already said is lost.
    """
    require_image(session)
    if not prompt or not prompt.strip():
        raise _fail("the prompt is empty: type a question or pick a quick task")
    turn = Turn(task=str(task), prompt=prompt.strip(), window=session.window, region=session.region)
    earlier = list(session.turns)
    session = dataclasses.replace(session, turns=[*earlier, turn])
    answer = ""
    try:
        chat = _ensure_chat(session, engine)
        stop = {"stop_rule": detection_stop_rule()} if task in BOX_TASKS else {}
        for piece in chat.ask(turn.prompt, max_new_tokens=engine.max_new_tokens, stream=True, **stop):
            answer += piece
            session = dataclasses.replace(session, turns=[*earlier, dataclasses.replace(turn, answer=answer)])
            yield session
    except PromptTooLongError as err:  # before any answer: nothing of the turn is kept, the chat stays
        raise _fail(str(err)) from err
    except Exception as err:  # the model failing must not lose the session
        answer += f"\n{MODEL_ERROR} {type(err).__name__}: {err}]"
        session.chat = None
    parsed = parse_detections(answer)
    done = dataclasses.replace(turn, answer=answer, skipped=parsed.skipped)
    number = len(earlier) + 1
    tile = Tile(*turn.window)
    found = [Found(tile_to_raster(d, tile), turn.prompt, number, "chat") for d in parsed.detections]
    yield dataclasses.replace(session, turns=[*earlier, done], found=[*session.found, *found])


def quick_task(
    session: Session, engine: Engine, task: str, text: str = "", classes: str = ""
) -> Iterator[Session]:
    """A quick-task button: build the paper's instruction for ``task`` and :func:`ask` it."""
    require_image(session)
    yield from ask(session, engine, build_prompt(session, task, text, classes), task)


def set_layers(session: Session, layers: list[str] | tuple[str, ...]) -> Session:
    """Which overlay layers are drawn."""
    return dataclasses.replace(session, layers=tuple(layers))


def clear_detections(session: Session) -> Session:
    """Forget the model's detections the analyst has not accepted; accepted boxes and the analyst's
    own stay (reviewed work is never thrown away by this button), and so does the conversation."""
    kept = [f for f in session.found if f.status == "accepted" or f.source == "analyst"]
    return dataclasses.replace(session, found=kept)


def clear_conversation(session: Session) -> Session:
    """Forget the conversation: the turns go and the model starts afresh about the window (the
    chat's clear button). Detections stay, the chat's ones no longer tied to a turn number (the
    next turns count from 1 again) but keeping what the turn told about them: its window and, for
    a grounding turn, its referring expression (as the note), so their review and their MMRS
    export are what they were; the image, window and region stay."""
    from app.annotations import description

    def freed(item: Found) -> Found:
        if item.source != "chat" or item.turn is None:
            return item
        window = item.window
        if window is None and 1 <= item.turn <= len(session.turns):
            window = session.turns[item.turn - 1].window
        return dataclasses.replace(item, turn=None, window=window, note=description(session, item))

    return dataclasses.replace(session, turns=[], chat=None, found=[freed(f) for f in session.found])


# ----------------------------------------------------------------------------- what the UI shows


def chat_messages(session: Session) -> list[dict[str, str]]:
    """The conversation as chat messages (``role``/``content``), one line marking each new window."""
    messages: list[dict[str, str]] = []
    window = None
    for turn in session.turns:
        if turn.window != window:
            window = turn.window
            messages.append({"role": "assistant", "content": f"*Window {_window_text(window)}*"})
        messages.append({"role": "user", "content": turn.prompt})
        messages.append({"role": "assistant", "content": turn.answer or "…"})
    return messages


def _window_text(window: WindowTuple | None) -> str:
    if not window:
        return "none"
    col_off, row_off, width, height = window
    return f"col {col_off}, row {row_off}, {width}×{height} px"


def _box_text(box: Any) -> str:
    return "[" + ", ".join(f"{v:.1f}" for v in box.as_list()) + "]"


def parsed_markdown(session: Session) -> str:
    """The last answer's raw text and what was parsed from it: grid, full-raster pixels and lon/lat."""
    if not session.turns:
        return "No answer yet."
    turn = session.turns[-1]
    number = len(session.turns)
    mine = [f for f in session.found if f.turn == number]
    lines = [f"**Turn {number}** · task `{turn.task}` · window {_window_text(turn.window)}",
             "", "Raw model text:", "```text", turn.answer, "```"]
    boxy = turn.task in BOX_TASKS
    invalid = invalid_markdown(turn.answer)
    if not mine:
        skipped = f" {turn.skipped} line(s) that looked like boxes could not be parsed." if boxy else ""
        none = "No usable boxes." if invalid else "No boxes parsed."
        lines.append((none + skipped) if boxy or turn.task == "ask" or invalid else "")
        return "\n".join(lines + invalid)
    info = session.info
    to_lonlat = raster_to_lonlat(info.transform, info.crs, info.gcps, info.gcps_crs) if info else None
    size = (info.width, info.height) if info else None
    lines += ["", "| class | kind | full-raster pixels | centre lon, lat |", "|---|---|---|---|"]
    for item in mine:
        box = item.detection.box
        centre = "not georeferenced"
        if (problem := box_problem(box, size)) is not None:  # e.g. from a session saved before the check
            centre = f"⚠ invalid: {problem}"
        elif to_lonlat is not None:
            try:
                lon, lat = to_lonlat([box.center])[0]
                centre = f"{lon:.6f}, {lat:.6f}"
            except ValueError:  # the centre does not project (e.g. space around a geostationary disk)
                centre = "— (off the Earth)"
        lines.append(f"| {item.detection.label} | {box_kind(box)} | {_box_text(box)} | {centre} |")
    if turn.skipped:
        lines.append(f"\n{turn.skipped} line(s) that looked like boxes could not be parsed.")
    return "\n".join(lines + invalid)


def invalid_markdown(answer: str) -> list[str]:
    """Markdown lines listing the boxes of ``answer`` that are not usable, each with its reason
    (:attr:`earthgpt.textbox.ParseResult.invalid`); none when all are usable."""
    invalid = parse_detections(answer).invalid
    if not invalid:
        return []
    heading = f"**{len(invalid)} invalid box{'es' if len(invalid) != 1 else ''}**"
    lines = ["", f"{heading} (not drawn, mapped or exported):", "",
             "| class | box as written (0–1000 grid) | invalid because |", "|---|---|---|"]
    return lines + [f"| {bad.label or '—'} | `{bad.text}` | ⚠ {bad.reason} |" for bad in invalid]


def info_markdown(session: Session) -> str:
    """What is open: file, size, bands, CRS, sensor and why, window, region."""
    info = session.info
    if info is None:
        return "No image loaded."
    crs = (_crs_name(info.crs) if info.crs else
           "GCPs in " + _crs_name(info.gcps_crs) if info.gcps_crs else "none: pixel coordinates only")
    bands = ",".join(map(str, session.bands)) if session.bands else "automatic"
    region = _box_text(session.region) + " px" if session.region else "none (draw a box on the image)"
    return "\n".join([
        f"**{session.name}** · {info.width}×{info.height} px · {info.count} band(s) {info.dtypes[0]}",
        f"- CRS: {crs}", f"- Sensor: **{session.sensor}** ({session.sensor_reason}) · bands: {bands}",
        *([f"- {hint}"] if (hint := _sar_pair_hint(session)) else []),
        f"- Window: {_window_text(session.window)} · model image {session.model_image.shape[1]}×"
        f"{session.model_image.shape[0]} px" if session.model_image is not None else "- Window: none",
        f"- Region: {region}", f"- Detections: {len(session.found)}",
        *([f"- ⚠ Whole scene: {session.scene_note}"] if session.scene_note else []),
        *(["- Overview: a quick preview from a sample of the blocks; the full one is being built"]
          if session.overview_builds else []),
    ])


def _crs_name(crs: str) -> str:
    """A CRS as the info panel shows it: ``EPSG:32618`` as it is, a long WKT or PROJ text by its
    name (review of 2026-12-04: GOES's whole WKT filled the sidebar)."""
    if len(crs) <= 40:
        return crs
    try:
        from pyproj import CRS

        parsed = CRS.from_user_input(crs)
        operation = parsed.coordinate_operation
        name = parsed.name if parsed.name != "unnamed" or operation is None else operation.method_name
        return f"{name} (custom)"
    except Exception:  # a text pyproj cannot read: its start
        return crs[:37] + "…"


def _sar_pair_hint(session: Session) -> str:
    """For a one-band VV (HH) SAR file opened without its VH (HV) beside it: how to get the composite."""
    if session.sensor != Sensor.sar or session.info is None or session.info.count != 1 or not session.path:
        return ""
    partner = raster.cross_pol_name(Path(session.path).name)
    if partner is None or raster.find_sar_pair(session.path) is not None:
        return ""
    return (f"One polarisation: upload {partner} while this file is open, for the VV/VH composite (the model "
            "was trained on it)")


def export_file(session: Session, out_dir: str | Path, model_name: str, kind: str) -> tuple[Path, str]:
    """Write the detections as ``geojson`` or ``gpkg``, or the reviewed boxes as ``mmrs`` training
    records (a zip, :mod:`app.mmrs_export`), into ``out_dir``; returns path and a note."""
    from app.export import export_geojson, export_gpkg
    from app.mmrs_export import export_mmrs

    writers = {"geojson": export_geojson, "gpkg": export_gpkg, "mmrs": export_mmrs}
    if kind not in writers:
        raise _fail(f"export format must be geojson, gpkg or mmrs, got {kind!r}")
    try:
        return writers[kind](session, out_dir, model_name)
    except ValueError as err:
        raise _fail(str(err)) from err

