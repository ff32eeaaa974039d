"""Export a session's detections: GeoJSON (RFC 7946, lon/lat) and GeoPackage (the raster's CRS).

Each feature carries ``class``, ``score`` (where the model gave one), ``box`` (hbb/obb),
``angle``, the ``prompt`` and chat ``turn`` it came from (no turn for a whole-scene run), the
``model`` name and the ``source`` image. An image without georeferencing exports in pixel space,
and the returned note (and the GeoJSON's ``note`` member) says so.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from app.session_io import Session
from earthgpt.box_spaces import raster_to_lonlat, raster_to_map
from earthgpt.geometry import Detection
from earthgpt.vector_export import PIXEL_SPACE_NOTE, feature_collection, write_gpkg


def _records(session: Session, model_name: str) -> tuple[list[Detection], list[dict[str, Any]]]:
    source = session.name or (Path(session.path).name if session.path else "")
    dets, props = [], []
    for item in session.found:
        dets.append(item.detection)
        props.append({"prompt": item.prompt, "turn": item.turn, "source_kind": item.source,
                      "model": model_name, "source": source})
    return dets, props


def _note(session: Session) -> str:
    count = len(session.found)
    info = session.info
    if info is not None and raster_to_map(info.transform, info.crs, info.gcps, info.gcps_crs) is not None:
        return f"{count} detections exported."
    return f"{count} detections exported. {PIXEL_SPACE_NOTE}"


def _stem(session: Session) -> str:
    stem = Path(session.name or session.path or "image").stem
    return re.sub(r"[^\w.-]+", "_", stem)[:80] or "image"


def _check(session: Session) -> None:
    if session.info is None:
        raise ValueError("no image loaded: load an image and find some objects first")
    if not session.found:
        raise ValueError("nothing to export yet: run a detection (quick task or whole scene) first")


def session_geojson(session: Session, model_name: str, *, pixel_space: bool = False) -> dict[str, Any]:
    """The session's detections as a GeoJSON FeatureCollection: lon/lat when the image is
    georeferenced, else (or with ``pixel_space``) full-raster pixels with a note."""
    dets, props = _records(session, model_name)
    info = session.info
    to_lonlat = None
    if info is not None and not pixel_space:
        to_lonlat = raster_to_lonlat(info.transform, info.crs, info.gcps, info.gcps_crs)
    return feature_collection(dets, props, to_lonlat=to_lonlat)


def export_geojson(session: Session, out_dir: str | Path, model_name: str) -> tuple[Path, str]:
    """Write ``<image>_detections.geojson`` into ``out_dir``; returns the path and a note for the user."""
    _check(session)
    path = Path(out_dir) / f"{_stem(session)}_detections.geojson"
    path.write_text(json.dumps(session_geojson(session, model_name)), encoding="utf-8")
    return path, _note(session)


def export_gpkg(session: Session, out_dir: str | Path, model_name: str) -> tuple[Path, str]:
    """Write ``<image>_detections.gpkg`` (native CRS) into ``out_dir``; returns the path and a note."""
    _check(session)
    path = Path(out_dir) / f"{_stem(session)}_detections.gpkg"
    path.unlink(missing_ok=True)
    dets, props = _records(session, model_name)
    info = session.info
    mapped = raster_to_map(info.transform, info.crs, info.gcps, info.gcps_crs)
    to_map, crs = mapped if mapped else (None, None)
    write_gpkg(str(path), dets, props, to_map=to_map, crs=crs)
    return path, _note(session)
