"""Pixel ↔ map ↔ lon/lat for boxes, through rasterio transforms and pyproj (no hand-made maths
beyond the affine).

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
from functools import lru_cache

import numpy as np
from pyproj import CRS, Transformer
from rasterio.control import GroundControlPoint
from rasterio.transform import Affine, GCPTransformer
from rasterio.windows import Window

from app.raster import RasterInfo
from earthgpt.geometry import HBB, OBB, Box, grid_to_pixel, obb_from_corners


class GeoreferenceError(ValueError):
    """A box that cannot be placed on the map, with a message for the user."""


def pixel_to_map(
    transform: Affine | Sequence[float], cols: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (grid positions, not centres) → map coordinates in the raster's CRS."""
    affine = transform if isinstance(transform, Affine) else Affine(*transform[:6])
    xs, ys = affine @ (np.asarray(cols, dtype=np.float64), np.asarray(rows, dtype=np.float64))
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


@lru_cache(maxsize=32)
def _to_lonlat(crs_text: str) -> Transformer:
    return Transformer.from_crs(CRS.from_user_input(crs_text), CRS.from_epsg(4326), always_xy=True)


def map_to_lonlat(crs: object, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates in ``crs`` (EPSG string, WKT, pyproj or rasterio CRS) → (lon, lat) in degrees.

    Points that do not project (e.g. off the Earth's disk of a geostationary view) come back NaN.
    """
    text = crs.to_wkt() if hasattr(crs, "to_wkt") else str(crs)
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    lons, lats = _to_lonlat(text).transform(xs, ys)
    lons, lats = np.asarray(lons, dtype=np.float64), np.asarray(lats, dtype=np.float64)
    bad = ~(np.isfinite(lons) & np.isfinite(lats))
    lons[bad] = np.nan
    lats[bad] = np.nan
    return lons, lats


def box_corners(box: Box) -> list[tuple[float, float]]:
    """The four corners of a box in its own order (HBB: top-left, top-right, bottom-right, bottom-left)."""
    if isinstance(box, HBB):
        return list(box.corners())
    if isinstance(box, OBB):
        return list(box.corners)
    raise GeoreferenceError(f"expected an HBB or OBB, got {type(box).__name__}")


def _pixels_to_map(
    info: RasterInfo, cols: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, str]:
    """Pixel coordinates → map coordinates and the CRS they are in (affine first, then GCPs)."""
    if info.crs is not None and info.affine != Affine.identity():
        xs, ys = pixel_to_map(info.transform, cols, rows)
        return xs, ys, info.crs
    if info.gcps and info.gcps_crs is not None:
        gcps = [g if isinstance(g, GroundControlPoint) else GroundControlPoint(**g) for g in info.gcps]
        with GCPTransformer(gcps) as transformer:
            xs, ys = transformer.xy(list(rows), list(cols), offset="ul")
        return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64), info.gcps_crs
    raise GeoreferenceError(
        f"{info.path} is not georeferenced (no CRS and transform, no ground control points): "
        "boxes stay in pixel space"
    )


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
    corners = box_corners(box)
    cols = np.array([c[0] for c in corners], dtype=np.float64)
    rows = np.array([c[1] for c in corners], dtype=np.float64)
    xs, ys, crs = _pixels_to_map(info, cols, rows)
    lons, lats = map_to_lonlat(crs, xs, ys)
    if not (np.isfinite(lons).all() and np.isfinite(lats).all()):
        raise GeoreferenceError(f"box {box} has corners off the Earth (e.g. outside a geostationary disk)")
    ring = [(float(lon), float(lat)) for lon, lat in zip(lons, lats, strict=True)]
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
