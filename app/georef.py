"""Pixel ↔ map ↔ lon/lat for boxes of the app, on top of :mod:`earthgpt.georef` (the one
pixel → map mapping, shared with ``earthgpt detect``: affine or GCPs through rasterio, pyproj).

Pixel convention: a *pixel coordinate* ``(col, row)`` is a position on the pixel grid, so
``(0, 0)`` is the outer top-left corner of the top-left pixel and the centre of pixel ``(i, j)``
is ``(i + 0.5, j + 0.5)``. Box corners are pixel coordinates and are transformed as they are,
with no +0.5 (rasterio's ``offset="ul"``).

Three spaces appear: the **window** the model saw (possibly resized), the **full raster** in
pixels, and the map (the raster's CRS, then EPSG:4326 lon/lat).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from rasterio.windows import Window

from app.raster import RasterInfo
from earthgpt.geometry import HBB, OBB, Box, grid_to_pixel, obb_from_corners
from earthgpt.georef import GeoreferenceError, PointsFn, map_to_lonlat, pixel_to_map, raster_to_map, to_lonlat

__all__ = [
    "GeoreferenceError", "box_corners", "grid_to_raster_pixels", "info_to_lonlat", "info_to_map",
    "map_to_lonlat", "pixel_box_to_lonlat", "pixel_to_map", "window_box_to_raster_pixels",
]


def info_to_map(info: RasterInfo) -> tuple[PointsFn, str] | None:
    """Full-raster pixels → the raster's map coordinates and that CRS (affine first, then GCPs),
    or None for a raster without georeferencing (:func:`earthgpt.georef.raster_to_map`)."""
    return raster_to_map(info.transform, info.crs, info.gcps, info.gcps_crs)


def info_to_lonlat(info: RasterInfo) -> PointsFn | None:
    """Full-raster pixels → (lon, lat), raising :class:`GeoreferenceError` off the Earth; None for a
    raster without georeferencing."""
    mapped = info_to_map(info)
    return None if mapped is None else to_lonlat(*mapped)


def box_corners(box: Box) -> list[tuple[float, float]]:
    """The four corners of a box in its own order (HBB: top-left, top-right, bottom-right, bottom-left)."""
    if isinstance(box, HBB):
        return list(box.corners())
    if isinstance(box, OBB):
        return list(box.corners)
    raise GeoreferenceError(f"expected an HBB or OBB, got {type(box).__name__}")


def _counter_clockwise(ring: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Reverse a closed ring if it runs clockwise (RFC 7946 wants exterior rings counter-clockwise)."""
    area2 = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in itertools.pairwise(ring))
    return ring if area2 >= 0 else [ring[0], *reversed(ring[1:-1]), ring[0]]


def pixel_box_to_lonlat(info: RasterInfo, box: Box) -> list[tuple[float, float]]:
    """A box in full-raster pixel coordinates → a closed (lon, lat) ring, counter-clockwise.

    Every corner is transformed (all four for an HBB), so rotated, sheared and GCP-georeferenced
    rasters stay right. The ring starts at the box's first corner and repeats it at the end.
    Raises :class:`GeoreferenceError` for rasters without georeferencing and for corners that do
    not land on the Earth.
    """
    convert = info_to_lonlat(info)
    if convert is None:
        raise GeoreferenceError(
            f"{info.path} is not georeferenced (no CRS and transform, no ground control points): "
            "boxes stay in pixel space"
        )
    try:
        ring = convert(box_corners(box))
    except GeoreferenceError as err:
        message = f"box {box} has corners off the Earth (e.g. outside a geostationary disk)"
        raise GeoreferenceError(message) from err
    return _counter_clockwise([*ring, ring[0]])


def _window_parts(window: Window | Sequence[float]) -> tuple[float, float, float, float]:
    if isinstance(window, Window):
        return float(window.col_off), float(window.row_off), float(window.width), float(window.height)
    col_off, row_off, width, height = (float(v) for v in window)
    return col_off, row_off, width, height


def window_box_to_raster_pixels(
    box: Box, window: Window | Sequence[float], scale: tuple[float, float] = (1.0, 1.0)
) -> Box:
    """A box in pixels of the image the model saw (the window, resized by 1/scale) → full-raster pixels.

    ``scale = (sx, sy)`` is full-raster pixels per model-image pixel, as returned by
    :func:`app.raster.read_window` / :func:`app.raster.read_overview`.
    """
    col_off, row_off, _, _ = _window_parts(window)
    sx, sy = scale
    if isinstance(box, HBB):
        return HBB(col_off + box.x1 * sx, row_off + box.y1 * sy, col_off + box.x2 * sx, row_off + box.y2 * sy)
    return obb_from_corners((col_off + x * sx, row_off + y * sy) for x, y in box_corners(box))


def grid_to_raster_pixels(
    grid_box: Box, window: Window | Sequence[float], scale: tuple[float, float] = (1.0, 1.0)
) -> Box:
    """A box on the model's 0–1000 grid over a window → full-raster pixels.

    The model image is ``width / sx`` × ``height / sy`` pixels; the grid is first taken to those
    pixels (:func:`earthgpt.geometry.grid_to_pixel`), then placed in the raster.
    """
    _, _, width, height = _window_parts(window)
    sx, sy = scale
    seen = grid_to_pixel(grid_box, width / sx, height / sy)
    return window_box_to_raster_pixels(seen, window, scale)
