"""Detections in full-raster pixels → GeoJSON (RFC 7946, lon/lat) or GeoPackage (the raster's CRS).

Used by ``earthgpt detect`` and the app's exports. Pixel space is the raster's (x = column,
y = row); a ``to_lonlat`` / ``to_map`` mapper (:mod:`earthgpt.box_spaces`) places the boxes on the
map, and without one the output stays in pixel space with a note saying so. Rings are oriented by
:func:`earthgpt.box_spaces.box_polygon`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from earthgpt.box_spaces import PointsFn, box_polygon, crs_text
from earthgpt.geometry import Detection, box_angle, box_kind


def _attributes(det: Detection, extra: Mapping[str, Any]) -> dict[str, Any]:
    kind, angle = box_kind(det.box), box_angle(det.box)
    return {**extra, "class": det.label, "score": det.score, "box": kind, "angle": angle}


PIXEL_SPACE_NOTE = (
    "Not georeferenced: the source image has no CRS or geotransform, so coordinates are image "
    "pixels (x = column, y = row from the top-left corner), not longitude/latitude."
)


def feature_collection(
    dets: Sequence[Detection], properties: Sequence[Mapping[str, Any]], *, to_lonlat: PointsFn | None = None
) -> dict[str, Any]:
    """GeoJSON FeatureCollection of raster-pixel detections.

    With ``to_lonlat`` (e.g. :func:`earthgpt.box_spaces.raster_to_lonlat`): RFC 7946, lon/lat in
    EPSG:4326, exterior rings counter-clockwise. Without: pixel coordinates (y down, rings
    clockwise on screen) and a top-level ``note`` saying so. Each feature gets ``properties[i]``
    plus ``class``, ``score``, ``box`` (hbb/obb) and ``angle``.
    """
    if len(properties) != len(dets):
        raise ValueError(f"expected one properties dict per detection: {len(dets)} vs {len(properties)}")
    features = []
    for det, extra in zip(dets, properties, strict=True):
        polygon = box_polygon(det.box, to_lonlat)
        coords = [[round(x, 9), round(y, 9)] for x, y in polygon.exterior.coords]
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [coords]},
                         "properties": _attributes(det, extra)})
    collection: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if to_lonlat is None:
        collection["note"] = PIXEL_SPACE_NOTE
    return collection


def write_gpkg(
    path: str, dets: Sequence[Detection], properties: Sequence[Mapping[str, Any]], *,
    to_map: PointsFn | None = None, crs: Any = None, layer: str = "detections",
) -> None:
    """GeoPackage of raster-pixel detections in the raster's own ``crs`` (``to_map``: pixels → map
    coordinates, as :func:`earthgpt.box_spaces.raster_to_map` gives with the CRS); in pixel space
    with no CRS when ``to_map`` is None."""
    import pyogrio.raw
    import shapely

    if len(properties) != len(dets):
        raise ValueError(f"expected one properties dict per detection: {len(dets)} vs {len(properties)}")
    polygons = [box_polygon(d.box, to_map) for d in dets]
    rows = [_attributes(d, extra) for d, extra in zip(dets, properties, strict=True)]
    names = list(dict.fromkeys(name for row in rows for name in row)) or ["class"]
    columns = [_column([row.get(name) for row in rows]) for name in names]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*'crs' was not provided.*")  # pixel space on purpose
        pyogrio.raw.write(
            path, shapely.to_wkb(np.array(polygons, dtype=object)), columns, names, layer=layer,
            driver="GPKG", geometry_type="Polygon", crs=crs_text(crs) if to_map and crs else None,
        )


def _column(values: list[Any]) -> np.ndarray:
    """One attribute column: integers, floats (NaN = null) when all are numbers, else strings."""
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.int64)
    if values and all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values):
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return np.array(["" if v is None else str(v) for v in values], dtype=object)


