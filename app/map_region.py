"""A box drawn on the map becomes the analyst's region, in full-raster pixels and on the grid.

The map (:mod:`app.maps`) shows a raster placed by its affine in lon/lat, and any other raster in
its own pixel space (Leaflet's ``Simple`` CRS, y up: a map point ``(lat, lng)`` is ``(-row, col)``).
The four corners of the box drawn there are taken back to full-raster pixels; their bounding box,
clipped to the raster, is the region. When the region does not lie inside the window the model
sees, the window moves to hold it, which starts a fresh conversation as any window move does.
"""

from __future__ import annotations

import dataclasses
import math

from app.handlers import UserError, require_image, set_window
from app.maps import on_globe
from app.session_io import Session
from app.session_io import Window as WindowTuple
from earthgpt.box_spaces import lonlat_to_raster, raster_to_grid
from earthgpt.geometry import HBB
from earthgpt.raster import RasterInfo, Tile
from earthgpt.textbox import format_box


def map_box_to_raster(info: RasterInfo, south: float, west: float, north: float, east: float) -> HBB | None:
    """A box in the map's coordinates (degrees, or ``-row``/``col`` in pixel space) → the
    full-raster pixel box that holds it, clipped to the raster; None when none of it is on the raster."""
    corners = [(west, south), (east, south), (east, north), (west, north)]
    if on_globe(info):
        points = lonlat_to_raster(info.transform, info.crs)(corners)
    else:
        points = [(lng, -lat) for lng, lat in corners]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x1, x2 = max(0.0, min(xs)), min(float(info.width), max(xs))
    y1, y2 = max(0.0, min(ys)), min(float(info.height), max(ys))
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 - x1 < 1 or y2 - y1 < 1:
        return None
    return HBB(x1, y1, x2, y2)


def _inside(box: HBB, window: WindowTuple) -> bool:
    col_off, row_off, width, height = window
    return (box.x1 >= col_off and box.y1 >= row_off
            and box.x2 <= col_off + width and box.y2 <= row_off + height)


def window_around(box: HBB, window: WindowTuple) -> WindowTuple:
    """A window of the current size (larger where the box is larger) centred on ``box``; the
    caller's :func:`app.handlers.set_window` clamps it to the raster."""
    width = max(window[2], math.ceil(box.width))
    height = max(window[3], math.ceil(box.height))
    cx, cy = box.center
    return (round(cx - width / 2), round(cy - height / 2), width, height)


def region_from_map(session: Session, south: float, west: float, north: float, east: float) -> Session:
    """The box drawn on the map (its south, west, north, east in the map's coordinates) as the
    region; the window moves to hold it when it lies outside the current one."""
    info = require_image(session)
    box = map_box_to_raster(info, south, west, north, east)
    if box is None:
        raise UserError("the box drawn on the map is not on the image: draw it over the image")
    if session.window is None or not _inside(box, session.window):
        session = set_window(session, *window_around(box, session.window or (0, 0, 1, 1)))
    return dataclasses.replace(session, region=box)


def region_grid_text(session: Session) -> str:
    """The region as the model reads it, on the 0–1000 grid of the window (``""`` without one)."""
    if session.region is None or session.window is None:
        return ""
    return format_box(raster_to_grid(session.region, Tile(*session.window)))


def region_status(session: Session, where: str) -> str:
    """The status line for a region just set: pixels and grid (``where`` says how it was drawn)."""
    if session.region is None:
        return "Region cleared."
    pixels = "[" + ", ".join(f"{v:.0f}" for v in session.region.as_list()) + "]"
    return f"Region set {where}: {pixels} px, {region_grid_text(session)} on the window's grid."
