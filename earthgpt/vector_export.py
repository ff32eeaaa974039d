"""Detections in full-raster pixels → GeoJSON (RFC 7946, lon/lat) or GeoPackage (the raster's CRS).

Used by ``earthgpt detect`` and the app's exports. Pixel space is the raster's (x = column,
y = row); a ``to_lonlat`` / ``to_map`` mapper (:mod:`earthgpt.box_spaces`) places the boxes on the
map, and without one the output stays in pixel space with a note saying so. Rings are oriented by
:func:`earthgpt.box_spaces.box_polygon`.

Lon/lat features stay whole across the antimeridian in memory (longitudes run on past 180, e.g.
179.9 → 180.1, as a web map draws them); :func:`write_geojson` writes them as RFC 7946 §3.1.9 asks
(:func:`rfc7946_geometry`): cut in two at the antimeridian, every longitude in [-180, 180]. A box
with corners past a pole (latitude beyond ±90°, a raster placed there by mistake) is left out.

Every feature written is a polygon with an area. A detection that cannot be one (a box that is not
usable, :func:`earthgpt.box_checks.box_problem`, or one that does not land on the map) is left
out and listed with its reason: the GeoJSON's ``skipped`` member, :func:`write_gpkg`'s return
value, and :func:`skipped_note` for the user. One bad detection never stops an export.

Files are written whole or not at all (:func:`replaced_when_written`): under a hidden temporary
name in the same folder, renamed over the target once complete, so a process killed or a disk
that fills during an export leaves the target as it was (absent, or the previous file), and a
failed write raises :class:`WriteError` with one line for the user.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import threading
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import shapely.affinity
from shapely.geometry.polygon import orient

from earthgpt.box_checks import box_problem
from earthgpt.box_spaces import GeoreferenceError, PointsFn, box_polygon, crs_text, lonlat_ring
from earthgpt.geometry import Detection, box_angle, box_kind

Skipped = dict[str, str]
"""A detection left out of an export: ``{"class": label, "reason": why}``."""

FULL_BELOW = 1 << 20
"""Free bytes under which a failed write is put down to a full disk (GDAL does not say so itself)."""


class WriteError(OSError):
    """A file that could not be written (a full disk, a folder gone); one line for the user, which
    names the file and not its folder. Whatever was at the path is as it was."""


@contextmanager
def replaced_when_written(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to, renamed to ``path`` when the block ends: a process
    killed or a disk that fills while writing never leaves a half-written file at ``path``. The
    temporary file goes on any error; an ``OSError`` or GDAL's error for a file it could not finish
    becomes :class:`WriteError` ("could not write NAME: the disk is full …")."""
    import pyogrio.errors

    path = Path(path)
    part = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.part{path.suffix}")
    try:
        yield part
        os.replace(part, path)
    except (OSError, pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as err:
        raise WriteError(f"could not write {path.name}: {_why_not_written(err, path.parent)}") from err
    finally:
        part.unlink(missing_ok=True)


def _why_not_written(err: Exception, folder: Path) -> str:
    try:
        full = shutil.disk_usage(folder).free < FULL_BELOW
    except OSError:
        full = False
    if (isinstance(err, OSError) and err.errno == errno.ENOSPC) or full:
        return "the disk is full (no space left on the device); free some space and export again"
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return " ".join(reason.split())


def write_geojson(path: str | Path, collection: Mapping[str, Any]) -> None:
    """Write a FeatureCollection (:func:`feature_collection`) to ``path``, whole or not at all; a
    lon/lat one as RFC 7946 wants it (:func:`rfc7946_geometry`), a pixel-space one as it is."""
    if collection.get("note") != PIXEL_SPACE_NOTE:
        features = [{**f, "geometry": rfc7946_geometry(f["geometry"])} for f in collection["features"]]
        collection = {**collection, "features": features}
    with replaced_when_written(path) as part:
        part.write_text(json.dumps(collection), encoding="utf-8")


WORLD = shapely.box(-180.0, -90.0, 180.0, 90.0)
"""Where RFC 7946 coordinates lie: longitude [-180, 180], latitude [-90, 90]."""


def _on_the_globe(to_lonlat: PointsFn) -> PointsFn:
    """``to_lonlat`` for one box's corners as :func:`earthgpt.box_spaces.lonlat_ring` draws them:
    densified where the map bends them, continuous across the antimeridian (one polygon whose
    longitudes may pass ±180), closed through a pole the box holds; :class:`GeoreferenceError` for
    corners past a pole."""
    return lambda points: lonlat_ring(points, to_lonlat)


def _ring(polygon: shapely.Polygon) -> list[list[float]]:
    return [[round(x, 9), round(y, 9)] for x, y in polygon.exterior.coords]


def rfc7946_geometry(geometry: Mapping[str, Any]) -> dict[str, Any]:
    """A lon/lat ``Polygon`` whose longitudes may run past ±180 (:func:`feature_collection`) as RFC
    7946 §3.1.9 writes it: the parts on each side of the antimeridian moved by 360° into
    [-180, 180], one ``Polygon`` when it does not cross, else a ``MultiPolygon`` of both parts
    (their exterior rings counter-clockwise, meeting at ±180)."""
    polygon = shapely.Polygon(geometry["coordinates"][0])
    west, _, east, _ = polygon.bounds
    if west >= -180.0 and east <= 180.0:  # on the globe as it is: written unchanged, vertex for vertex
        return {"type": "Polygon", "coordinates": [[list(point) for point in geometry["coordinates"][0]]]}
    parts = []
    for turns in range(math.floor((west + 180.0) / 360.0), math.ceil((east - 180.0) / 360.0) + 1):
        piece = shapely.intersection(shapely.affinity.translate(polygon, xoff=-360.0 * turns), WORLD)
        parts += [orient(p, sign=1.0) for p in getattr(piece, "geoms", [piece])
                  if isinstance(p, shapely.Polygon) and p.area > 0]
    if len(parts) == 1:
        return {"type": "Polygon", "coordinates": [_ring(parts[0])]}
    return {"type": "MultiPolygon", "coordinates": [[_ring(part)] for part in parts]}


_FIXED_NAMES = ("class", "score", "box", "angle")


def _attributes(det: Detection, extra: Mapping[str, Any]) -> dict[str, Any]:
    kind, angle = box_kind(det.box), box_angle(det.box)
    return {**extra, "class": det.label, "score": det.score, "box": kind, "angle": angle}


PIXEL_SPACE_NOTE = (
    "Not georeferenced: the source image has no CRS or geotransform, so coordinates are image "
    "pixels (x = column, y = row from the top-left corner), not longitude/latitude."
)


def placed_polygons(
    dets: Sequence[Detection], properties: Sequence[Mapping[str, Any]], to_space: PointsFn | None,
    raster_size: tuple[float, float] | None = None,
) -> tuple[list[tuple[shapely.Polygon, dict[str, Any]]], list[Skipped]]:
    """Each detection that can be written as ``(polygon in to_space, attributes)``, and those left
    out with their reason. ``raster_size`` (width, height in pixels), when given, also leaves out
    boxes wholly outside the raster."""
    if len(properties) != len(dets):
        raise ValueError(f"expected one properties dict per detection: {len(dets)} vs {len(properties)}")
    placed, skipped = [], []
    for det, extra in zip(dets, properties, strict=True):
        problem = box_problem(det.box, raster_size)
        if problem is None:
            try:
                placed.append((box_polygon(det.box, to_space), _attributes(det, extra)))
                continue
            except GeoreferenceError as err:
                problem = str(err)
        skipped.append({"class": det.label, "reason": problem})
    return placed, skipped


def skipped_note(skipped: Sequence[Skipped]) -> str:
    """``"2 detections left out: zero area (1), off the image (1)."``, or ``""`` when none were."""
    if not skipped:
        return ""
    reasons = ", ".join(f"{why} ({n})" for why, n in Counter(s["reason"] for s in skipped).most_common())
    return f"{len(skipped)} detection{'s' if len(skipped) != 1 else ''} left out: {reasons}."


def feature_collection(
    dets: Sequence[Detection], properties: Sequence[Mapping[str, Any]], *, to_lonlat: PointsFn | None = None,
    raster_size: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """GeoJSON FeatureCollection of raster-pixel detections.

    With ``to_lonlat`` (e.g. :func:`earthgpt.box_spaces.raster_to_lonlat`): lon/lat in EPSG:4326,
    exterior rings counter-clockwise, a box across the antimeridian one polygon whose longitudes run
    past 180 (:func:`write_geojson` cuts it as RFC 7946 asks). Without: pixel coordinates (y down,
    rings clockwise on screen) and a top-level ``note`` saying so. Each feature gets ``properties[i]``
    plus ``class``, ``score``, ``box`` (hbb/obb) and ``angle``. Detections that cannot be written
    (:func:`placed_polygons`) are listed in a top-level ``skipped`` member instead.
    """
    placed, skipped = placed_polygons(dets, properties, to_lonlat and _on_the_globe(to_lonlat), raster_size)
    features = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [_ring(polygon)]},
                 "properties": attributes} for polygon, attributes in placed]
    collection: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if to_lonlat is None:
        collection["note"] = PIXEL_SPACE_NOTE
    if skipped:
        collection["skipped"] = skipped
    return collection


def write_gpkg(
    path: str, dets: Sequence[Detection], properties: Sequence[Mapping[str, Any]], *,
    to_map: PointsFn | None = None, crs: Any = None, layer: str = "detections",
    raster_size: tuple[float, float] | None = None,
) -> list[Skipped]:
    """GeoPackage of raster-pixel detections in the raster's own ``crs`` (``to_map``: pixels → map
    coordinates, as :func:`earthgpt.box_spaces.raster_to_map` gives with the CRS); in pixel space
    with no CRS when ``to_map`` is None. One POLYGON layer holding polygons only, in a new file that
    replaces ``path`` once complete (:func:`replaced_when_written`); returns the detections left
    out (:func:`placed_polygons`)."""
    placed, skipped = placed_polygons(dets, properties, to_map, raster_size)
    names = list(dict.fromkeys([*(name for extra in properties for name in extra), *_FIXED_NAMES]))
    polygons, rows = [polygon for polygon, _ in placed], [attributes for _, attributes in placed]
    with replaced_when_written(path) as part:
        write_polygon_layer(str(part), polygons, rows, names, crs=crs_text(crs) if to_map and crs else None,
                            layer=layer)
    return skipped


def write_polygon_layer(
    path: str, polygons: Sequence[shapely.Polygon], rows: Sequence[Mapping[str, Any]], names: Sequence[str],
    *, crs: str | None, layer: str = "detections",
) -> None:
    """One POLYGON layer of a GeoPackage (added to the file when it exists): ``polygons`` already in
    ``crs`` (None: pixel space), attribute columns ``names`` taken from ``rows`` (missing = null)."""
    import pyogrio.raw

    columns = [_column([row.get(name) for row in rows]) for name in names]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*'crs' was not provided.*")  # pixel space on purpose
        pyogrio.raw.write(
            path, shapely.to_wkb(np.array(polygons, dtype=object)), columns, list(names), layer=layer,
            driver="GPKG", geometry_type="Polygon", crs=crs,
        )


def _column(values: list[Any]) -> np.ndarray:
    """One attribute column: integers, floats (NaN = null) when all are numbers, else strings."""
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.int64)
    if values and all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values):
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return np.array(["" if v is None else str(v) for v in values], dtype=object)


