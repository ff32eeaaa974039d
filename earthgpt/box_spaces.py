"""Boxes between the coordinate spaces of a raster: the one home of every box transform.

The spaces, from what the model writes to the globe:

- **grid**: the integer 0–1000 grid over the image the model sees, which shows one *window* of
  the raster (:data:`earthgpt.geometry.GRID`; grid ↔ pixels of an image of a given size is
  :func:`earthgpt.geometry.grid_to_pixel` / :func:`~earthgpt.geometry.pixel_to_grid`);
- **image**: pixels of an image showing a window of the raster, resampled (the model's input,
  the app's view, the overview); the window itself is a :class:`earthgpt.raster.Tile` (or any
  object with ``col_off``, ``row_off``, ``width``, ``height``, such as a rasterio ``Window``);
- **raster**: full-raster pixels, where detections are kept;
- **map**: the raster's CRS, reached by its affine transform or, without one, its ground control
  points (rasterio's ``GCPTransformer``);
- **lon/lat**: EPSG:4326 degrees, through pyproj.

A *pixel coordinate* ``(x, y) = (col, row)`` is a position on the pixel grid: ``(0, 0)`` is the
outer top-left corner of the top-left pixel (rasterio's ``offset="ul"``), so box corners are
transformed as they are, with no +0.5. Every function names the space that goes in and the one
that comes out; an :class:`~earthgpt.geometry.HBB` stays xyxy where the map between the spaces
only shifts and scales each axis, and any box becomes four corners on the map (all four, so rotated,
sheared and GCP-placed rasters stay right). Points that do not project (off the Earth's disk of a
geostationary view) raise :class:`GeoreferenceError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from earthgpt.geometry import (
    HBB,
    Box,
    Point,
    box_corners,
    grid_to_pixel,
    obb_from_corners,
    pixel_to_grid,
    translate_box,
)

if TYPE_CHECKING:
    from earthgpt.raster import Tile

Points = list[Point]
PointsFn = Callable[[Points], Points]
"""Maps a list of (x, y) points from one space to another (e.g. raster pixels → lon/lat)."""

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class GeoreferenceError(ValueError):
    """A point or box that cannot be placed on the map, with a message for the user."""


# ----------------------------------------------------------------- grid, image and raster pixels


def _map_box(box: Box, point: Callable[[float, float], Point]) -> Box:
    """A box through a point map that shifts and scales each axis (scale > 0): an HBB by its two
    xyxy corners, an OBB by its four (re-ordered by the paper's rule)."""
    if isinstance(box, HBB):
        (x1, y1), (x2, y2) = point(box.x1, box.y1), point(box.x2, box.y2)
        return HBB(x1, y1, x2, y2)
    return obb_from_corners(point(x, y) for x, y in box_corners(box))


def grid_to_raster(box: Box, window: Tile) -> Box:
    """A box on the 0–1000 grid over ``window`` → full-raster pixels: the grid is taken to window
    pixels (:func:`earthgpt.geometry.grid_to_pixel`), then shifted by the window's offset."""
    return translate_box(grid_to_pixel(box, window.width, window.height), window.col_off, window.row_off)


def raster_to_grid(box: Box, window: Tile) -> Box:
    """A box in full-raster pixels → the 0–1000 grid over ``window`` (rounded, clamped to 0..1000)."""
    return pixel_to_grid(translate_box(box, -window.col_off, -window.row_off), window.width, window.height)


def image_to_raster(box: Box, window: Tile, scale: tuple[float, float]) -> Box:
    """A box in pixels of an image of ``window`` → full-raster pixels: ``col_off + x · sx``.

    ``scale = (sx, sy)`` is full-raster pixels per image pixel, as the raster readers return it.
    """
    sx, sy = scale
    return _map_box(box, lambda x, y: (window.col_off + x * sx, window.row_off + y * sy))


def raster_to_image(box: Box, window: Tile, size: tuple[int, int]) -> Box:
    """A box in full-raster pixels → pixels of an image of ``window`` that is ``size = (width,
    height)`` pixels: ``(x − col_off) · width / window.width``."""
    sx, sy = size[0] / window.width, size[1] / window.height
    return _map_box(box, lambda x, y: ((x - window.col_off) * sx, (y - window.row_off) * sy))


# ----------------------------------------------------------------- raster pixels → map → lon/lat


def placed_by_affine(transform: Any, crs: Any) -> bool:
    """Whether a raster lies on the map by its affine: it has a CRS and a non-identity transform
    (rasterio ``Affine`` or its 6 coefficients)."""
    return crs is not None and transform is not None and tuple(transform)[:6] != IDENTITY


def _affine(transform: Any) -> Any:
    from rasterio.transform import Affine

    return transform if isinstance(transform, Affine) else Affine(*tuple(transform)[:6])


def _affine_to_map(transform: Any) -> PointsFn:
    """Raster pixels → map coordinates through an affine (pixel-grid positions, not centres)."""
    affine = _affine(transform)

    def convert(points: Points) -> Points:
        cols = np.array([p[0] for p in points], dtype=np.float64)
        rows = np.array([p[1] for p in points], dtype=np.float64)
        xs, ys = affine @ (cols, rows)
        return list(zip(np.asarray(xs, dtype=np.float64).tolist(), np.asarray(ys, dtype=np.float64).tolist(),
                        strict=True))

    return convert


def _gcps_to_map(gcps: Sequence[Any]) -> PointsFn:
    """Raster pixels → map coordinates through ground control points (rasterio ``GroundControlPoint``
    or dicts of its fields), by GDAL's GCP transformer (a polynomial fit)."""
    from rasterio.control import GroundControlPoint
    from rasterio.transform import GCPTransformer

    points_of = [g if isinstance(g, GroundControlPoint) else GroundControlPoint(**g) for g in gcps]

    def convert(points: Points) -> Points:
        with GCPTransformer(points_of) as transformer:
            xs, ys = transformer.xy([p[1] for p in points], [p[0] for p in points], offset="ul")
        return list(zip(np.atleast_1d(xs).tolist(), np.atleast_1d(ys).tolist(), strict=True))

    return convert


def raster_to_map(
    transform: Any, crs: Any, gcps: Sequence[Any] = (), gcps_crs: Any = None
) -> tuple[PointsFn, Any] | None:
    """Full-raster pixels → map coordinates and the CRS they are in: by the affine when the raster
    is :func:`placed_by_affine`, else by its GCPs, else None (not georeferenced).

    Takes a rasterio dataset's ``transform, crs, *gcps`` or the same fields of a raster's header.
    """
    if placed_by_affine(transform, crs):
        return _affine_to_map(transform), crs
    if gcps and gcps_crs is not None:
        return _gcps_to_map(gcps), gcps_crs
    return None


def crs_text(crs: Any) -> str:
    """A CRS as text pyproj and GDAL read: WKT for a rasterio or pyproj CRS, else ``str(crs)``."""
    return crs.to_wkt() if hasattr(crs, "to_wkt") else str(crs)


@lru_cache(maxsize=32)
def _to_wgs84(crs_text: str) -> Any:
    from pyproj import CRS, Transformer

    return Transformer.from_crs(CRS.from_user_input(crs_text), CRS.from_epsg(4326), always_xy=True)


def _then_lonlat(to_map: PointsFn, crs: Any) -> PointsFn:
    """Compose ``to_map`` with the projection of ``crs`` (EPSG string, WKT, pyproj or rasterio CRS)
    to (lon, lat); raises :class:`GeoreferenceError` when a point does not land on the Earth."""

    def convert(points: Points) -> Points:
        mapped = to_map(points)
        xs = np.array([p[0] for p in mapped], dtype=np.float64)
        ys = np.array([p[1] for p in mapped], dtype=np.float64)
        lons, lats = _to_wgs84(crs_text(crs)).transform(xs, ys)
        lons, lats = np.array(lons, dtype=np.float64, ndmin=1), np.array(lats, dtype=np.float64, ndmin=1)
        if not (np.isfinite(lons).all() and np.isfinite(lats).all()):
            raise GeoreferenceError("a box has corners off the Earth (outside the sensor's view)")
        return list(zip(lons.tolist(), lats.tolist(), strict=True))

    return convert


def raster_to_lonlat(
    transform: Any, crs: Any, gcps: Sequence[Any] = (), gcps_crs: Any = None
) -> PointsFn | None:
    """Full-raster pixels → (lon, lat) (affine first, then GCPs, see :func:`raster_to_map`), or
    None for a raster without georeferencing."""
    mapped = raster_to_map(transform, crs, gcps, gcps_crs)
    return None if mapped is None else _then_lonlat(*mapped)


@lru_cache(maxsize=32)
def _from_wgs84(crs_text: str) -> Any:
    from pyproj import CRS, Transformer

    return Transformer.from_crs(CRS.from_epsg(4326), CRS.from_user_input(crs_text), always_xy=True)


def lonlat_to_raster(transform: Any, crs: Any) -> PointsFn:
    """(lon, lat) → full-raster pixels of a raster placed by its affine (:func:`placed_by_affine`):
    the inverse of :func:`raster_to_lonlat` (e.g. a box drawn on a web map back onto the raster)."""
    inverse = ~_affine(transform)

    def convert(points: Points) -> Points:
        lons = np.array([p[0] for p in points], dtype=np.float64)
        lats = np.array([p[1] for p in points], dtype=np.float64)
        xs, ys = _from_wgs84(crs_text(crs)).transform(lons, lats)
        cols, rows = inverse @ (np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
        return list(zip(np.atleast_1d(cols).tolist(), np.atleast_1d(rows).tolist(), strict=True))

    return convert


BEND_TOLERANCE = 0.005
"""How far (as a share of the edge's length, both in degrees of arc: a degree of longitude counts
cos(latitude)) the true middle of a box edge may lie from the straight lon/lat line between its
ends before :func:`lonlat_ring` adds a vertex there."""


def lonlat_ring(points: Points, to_lonlat: PointsFn, *, max_rounds: int = 8) -> Points:
    """A ring (its vertices, not closed, in any space ``to_lonlat`` takes) as lon/lat vertices that
    draw the same shape on the globe when read as straight lon/lat lines (RFC 7946's reading).

    - An edge whose middle the mapping bends away from the straight lon/lat line (by more than
      :data:`BEND_TOLERANCE` of its length; near a pole) gets vertices added, halving it up to
      ``max_rounds`` times; so does one whose longitude changes by more than 90°, so that a box
      wider than 180° keeps its width.
    - Longitudes run continuously (179.9 then 180.1 rather than -179.9), so a ring across the
      antimeridian stays one ring; :func:`earthgpt.vector_export.rfc7946_geometry` cuts it.
    - A ring around a pole (its longitudes turn once round the globe) is closed through the pole.

    Raises :class:`GeoreferenceError` for a vertex beyond a pole."""
    source = [tuple(map(float, p)) for p in points]
    mapped = _checked_lonlat(to_lonlat(source))
    for _ in range(max_rounds):
        after = source[1:] + source[:1]
        middles = [((a[0] + b[0]) / 2, (a[1] + b[1]) / 2) for a, b in zip(source, after, strict=True)]
        true = _checked_lonlat(to_lonlat(middles))
        ends = mapped[1:] + mapped[:1]
        split = []
        for (lon0, lat0), (lon1, lat1), (lon, lat) in zip(mapped, ends, true, strict=True):
            lon1 = lon0 + _wrap(lon1 - lon0)
            lon = lon0 + _wrap(lon - lon0)
            east = max(np.cos(np.radians((lat0 + lat1) / 2)), 1e-9)  # a degree of longitude, in arc
            length = max(np.hypot(east * (lon1 - lon0), lat1 - lat0), 1e-12)
            bend = np.hypot(east * (lon - (lon0 + lon1) / 2), lat - (lat0 + lat1) / 2)
            split.append(abs(lon1 - lon0) > 90.0 or bend > BEND_TOLERANCE * length)
        if not any(split):
            break
        source = [q for k, p in enumerate(source) for q in ([p, middles[k]] if split[k] else [p])]
        mapped = [q for k, p in enumerate(mapped) for q in ([p, true[k]] if split[k] else [p])]
    ring = [mapped[0]]
    for lon, lat in mapped[1:]:
        ring.append((ring[-1][0] + _wrap(lon - ring[-1][0]), lat))
    turn = ring[-1][0] + _wrap(ring[0][0] - ring[-1][0]) - ring[0][0]
    if abs(turn) > 180.0:  # once round the globe: the ring holds a pole; go over it
        pole = 90.0 if sum(lat for _, lat in ring) > 0 else -90.0
        ring += [(ring[0][0] + turn, ring[0][1]), (ring[0][0] + turn, pole), (ring[0][0], pole)]
    return ring


def _wrap(delta: float) -> float:
    """``delta`` degrees of longitude as the shorter turn, in [-180, 180)."""
    return (delta + 180.0) % 360.0 - 180.0


def _checked_lonlat(points: Points) -> Points:
    out = [(float(lon), float(lat)) for lon, lat in points]
    if any(abs(lat) > 90.0 + 1e-9 for _, lat in out):  # a pole itself, give or take rounding, is on the globe
        raise GeoreferenceError("a box has corners past the pole (latitude beyond ±90°)")
    return out


def box_polygon(box: Box, to_space: PointsFn | None = None) -> shapely.Polygon:
    """A box's four corners taken through ``to_space`` (e.g. :func:`raster_to_lonlat`; None: the
    box's own space) as a valid polygon (a self-crossing ring becomes its convex hull) whose
    exterior runs counter-clockwise in that space's axes, as RFC 7946 wants in lon/lat: the one
    ring orientation rule of every export. A box that has no area there (a zero-area box, or
    corners the mapping puts on one line) raises :class:`GeoreferenceError`; check boxes with
    :func:`earthgpt.box_checks.box_problem` first."""
    from shapely.geometry.polygon import orient

    corners = box_corners(box)
    polygon = shapely.Polygon(to_space(corners) if to_space else corners)
    if not polygon.is_valid:
        polygon = shapely.make_valid(polygon).convex_hull
    if not isinstance(polygon, shapely.Polygon) or polygon.is_empty or polygon.area <= 0:
        raise GeoreferenceError("the box has zero area on the map")
    return orient(polygon, sign=1.0)
