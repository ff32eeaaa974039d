"""Per-scene GeoPackages (:func:`earthgpt.vector_export.write_gpkg`) → one GeoPackage with a
``scene`` column: the merged file of an archive run (:mod:`earthgpt.scene_archive`).

The scenes may be in different CRSs: the merged layer ``detections`` keeps the CRS they all share,
else it is EPSG:4326 (each polygon reprojected as :func:`earthgpt.box_spaces.lonlat_ring` draws
it: vertices added where the map bends its edges, one polygon whose longitudes run on past 180
across the antimeridian, closed through a pole it holds). Scenes in pixel space (no CRS) cannot
share a map layer, so they go to a second layer, :data:`PIXEL_LAYER`, written only when there are any.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely

PIXEL_LAYER = "pixel_space"
FALLBACK_CRS = "EPSG:4326"


@dataclass(frozen=True)
class SceneLayer:
    """One scene's GeoPackage layer as read back: its polygons and their attribute rows."""

    scene: str
    crs: str | None
    polygons: list[shapely.Polygon]
    fields: list[str]
    rows: list[dict[str, Any]]


def read_scene_layer(path: Path, scene: str) -> SceneLayer:
    """The first layer of the GeoPackage at ``path``, labelled ``scene``."""
    import pyogrio.raw

    meta, _, wkb, columns = pyogrio.raw.read(path)
    fields = [str(name) for name in meta["fields"]]
    values = zip(*(column.tolist() for column in columns), strict=True)
    rows = [dict(zip(fields, row, strict=True)) for row in values]
    return SceneLayer(scene, meta["crs"], list(shapely.from_wkb(wkb)), fields, rows)


def common_crs(crses: Sequence[str]) -> str:
    """The CRS all of ``crses`` are (compared as CRSs, not as text), else :data:`FALLBACK_CRS`."""
    from pyproj import CRS

    if crses and all(CRS.from_user_input(c) == CRS.from_user_input(crses[0]) for c in crses[1:]):
        return crses[0]
    return FALLBACK_CRS


def reproject(polygons: list[shapely.Polygon], source: str | None, target: str) -> list[shapely.Polygon]:
    """``polygons`` from CRS ``source`` (None: left as they are) to ``target`` (x = east / lon
    first): into a geographic ``target`` through :func:`earthgpt.box_spaces.lonlat_ring` (each
    exterior counter-clockwise), else vertex by vertex."""
    from pyproj import CRS, Transformer
    from shapely.geometry.polygon import orient

    from earthgpt.box_spaces import GeoreferenceError, lonlat_ring

    if not polygons or source is None or CRS.from_user_input(source) == CRS.from_user_input(target):
        return polygons
    move = Transformer.from_crs(source, target, always_xy=True).transform

    def by_vertex(polygon: shapely.Polygon) -> shapely.Polygon:
        return shapely.transform(polygon, lambda xy: np.column_stack(move(xy[:, 0], xy[:, 1])))

    if not CRS.from_user_input(target).is_geographic:
        return [by_vertex(polygon) for polygon in polygons]

    def to_lonlat(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        xs, ys = move(np.array([p[0] for p in points]), np.array([p[1] for p in points]))
        return list(zip(np.atleast_1d(xs).tolist(), np.atleast_1d(ys).tolist(), strict=True))

    def on_the_globe(polygon: shapely.Polygon) -> shapely.Polygon:
        try:
            ring = shapely.Polygon(lonlat_ring(list(polygon.exterior.coords)[:-1], to_lonlat))
        except GeoreferenceError:  # off the globe: as the vertices fall
            return by_vertex(polygon)
        return orient(ring, sign=1.0) if ring.is_valid and ring.area > 0 else by_vertex(polygon)

    return [on_the_globe(polygon) for polygon in polygons]


def _write_layer(path: Path, layers: Sequence[SceneLayer], crs: str | None, layer: str) -> None:
    from earthgpt.vector_export import write_polygon_layer

    names = list(dict.fromkeys(["scene", *(name for part in layers for name in part.fields)]))
    polygons = [polygon for part in layers
                for polygon in (reproject(part.polygons, part.crs, crs) if crs else part.polygons)]
    rows = [{**row, "scene": part.scene} for part in layers for row in part.rows]
    write_polygon_layer(str(path), polygons, rows, names, crs=crs, layer=layer)


def merge_gpkgs(target: Path, scenes: Sequence[tuple[str, Path]]) -> dict[str, Any]:
    """Write ``target`` from the ``(scene name, GeoPackage)`` pairs, in their order: layer
    ``detections`` (every georeferenced scene, in :func:`common_crs`) and, when some scene has no
    CRS, layer :data:`PIXEL_LAYER`. Returns ``{"crs", "features", PIXEL_LAYER: count}``."""
    layers = [read_scene_layer(path, scene) for scene, path in scenes]
    placed = [part for part in layers if part.crs]
    unplaced = [part for part in layers if not part.crs]
    crs = common_crs([part.crs for part in placed if part.crs])
    _write_layer(target, placed, crs, "detections")
    if unplaced:
        _write_layer(target, unplaced, None, PIXEL_LAYER)
    return {"crs": crs, "features": sum(len(part.rows) for part in placed),
            PIXEL_LAYER: sum(len(part.rows) for part in unplaced)}
