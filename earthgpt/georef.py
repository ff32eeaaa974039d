"""Raster pixels → map coordinates → (lon, lat): the one pixel-to-map mapping of the CLI and the app.

A *pixel coordinate* ``(x, y) = (col, row)`` is a position on the pixel grid: ``(0, 0)`` is the
outer top-left corner of the top-left pixel (rasterio's ``offset="ul"``), so box corners are
transformed as they are. A raster is placed on the map by its affine transform when it has a CRS
and a non-identity transform, else by its ground control points (rasterio's ``GCPTransformer``),
else not at all. Map coordinates go to EPSG:4326 through pyproj; points that do not project
(off the Earth's disk of a geostationary view) raise :class:`GeoreferenceError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

Points = list[tuple[float, float]]
PointsFn = Callable[[Points], Points]
"""Maps a list of (x, y) points from one space to another (e.g. raster pixels → lon/lat)."""

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class GeoreferenceError(ValueError):
    """A point or box that cannot be placed on the map, with a message for the user."""


def _affine(transform: Any) -> Any:
    from rasterio.transform import Affine

    return transform if isinstance(transform, Affine) else Affine(*tuple(transform)[:6])


def pixel_to_map(transform: Any, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (grid positions, not centres) → map coordinates through an affine
    (rasterio ``Affine`` or its 6 coefficients)."""
    xs, ys = _affine(transform) @ (np.asarray(cols, dtype=np.float64), np.asarray(rows, dtype=np.float64))
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def _crs_text(crs: Any) -> str:
    return crs.to_wkt() if hasattr(crs, "to_wkt") else str(crs)


@lru_cache(maxsize=32)
def _to_wgs84(crs_text: str) -> Any:
    from pyproj import CRS, Transformer

    return Transformer.from_crs(CRS.from_user_input(crs_text), CRS.from_epsg(4326), always_xy=True)


def map_to_lonlat(crs: Any, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates in ``crs`` (EPSG string, WKT, pyproj or rasterio CRS) → (lon, lat) in degrees.

    Points that do not project (e.g. off the Earth's disk of a geostationary view) come back NaN.
    """
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    lons, lats = _to_wgs84(_crs_text(crs)).transform(xs, ys)
    lons, lats = np.array(lons, dtype=np.float64, ndmin=1), np.array(lats, dtype=np.float64, ndmin=1)
    bad = ~(np.isfinite(lons) & np.isfinite(lats))
    lons[bad] = np.nan
    lats[bad] = np.nan
    return lons, lats


def affine_to_map(transform: Any) -> PointsFn:
    """Raster pixels (x = column, y = row) → map coordinates through an affine."""

    def convert(points: Points) -> Points:
        xs, ys = pixel_to_map(transform, np.array([p[0] for p in points]), np.array([p[1] for p in points]))
        return list(zip(xs.tolist(), ys.tolist(), strict=True))

    return convert


def gcps_to_map(gcps: Sequence[Any]) -> PointsFn:
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
    """Raster pixels → map coordinates and the CRS they are in: the affine when the raster has a CRS
    and a non-identity transform, else its GCPs, else None (not georeferenced)."""
    if crs is not None and transform is not None and tuple(transform)[:6] != IDENTITY:
        return affine_to_map(transform), crs
    if gcps and gcps_crs is not None:
        return gcps_to_map(gcps), gcps_crs
    return None


def to_lonlat(to_map: PointsFn, crs: Any) -> PointsFn:
    """Compose ``to_map`` with the projection of ``crs`` to (lon, lat); raises
    :class:`GeoreferenceError` when a point does not land on the Earth."""

    def convert(points: Points) -> Points:
        mapped = to_map(points)
        lons, lats = map_to_lonlat(crs, np.array([p[0] for p in mapped]), np.array([p[1] for p in mapped]))
        if not (np.isfinite(lons).all() and np.isfinite(lats).all()):
            raise GeoreferenceError("a box has corners off the Earth (outside the sensor's view)")
        return list(zip(lons.tolist(), lats.tolist(), strict=True))

    return convert


def raster_to_lonlat(
    transform: Any, crs: Any, gcps: Sequence[Any] = (), gcps_crs: Any = None
) -> PointsFn | None:
    """Raster pixels → (lon, lat) (affine first, then GCPs, see :func:`raster_to_map`), or None for
    a raster without georeferencing."""
    mapped = raster_to_map(transform, crs, gcps, gcps_crs)
    return None if mapped is None else to_lonlat(*mapped)


def affine_to_lonlat(transform: Any, crs: Any) -> PointsFn:
    """Raster pixels → (lon, lat) through an affine and the raster's CRS."""
    return to_lonlat(affine_to_map(transform), crs)


def dataset_mappers(src: Any) -> tuple[tuple[PointsFn, Any] | None, PointsFn | None]:
    """``(raster_to_map, raster_to_lonlat)`` of an open rasterio dataset (both None when the
    dataset is not georeferenced)."""
    gcps, gcps_crs = src.gcps
    mapped = raster_to_map(src.transform, src.crs, gcps, gcps_crs)
    return mapped, (None if mapped is None else to_lonlat(*mapped))
