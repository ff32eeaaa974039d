"""Export a session's detections: GeoJSON (RFC 7946, lon/lat) and GeoPackage (the raster's CRS).

Each feature carries ``class``, ``score`` (where the model gave one), ``box`` (hbb/obb),
``angle``, the ``source`` image and its provenance and review (:func:`provenance_properties`:
model or analyst, the model's name, the chat turn and prompt, pending or accepted). An image
without georeferencing exports in pixel space, and the returned note (and the GeoJSON's ``note``
member) says so. A detection that cannot be written (a box that is not usable, e.g. from an old
session file, or one that does not land on the map) is left out and the note says so. Files are
written whole or not at all: a server killed or a disk that fills during an export leaves no
half-written file, and a failed write is one line for the analyst.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app.annotations import ANALYST, description
from app.security import file_in
from app.session_io import Found, Session, found_model
from earthgpt.box_spaces import raster_to_lonlat, raster_to_map
from earthgpt.geometry import Detection
from earthgpt.vector_export import (
    PIXEL_SPACE_NOTE,
    Skipped,
    WriteError,
    feature_collection,
    placed_polygons,
    skipped_note,
    write_geojson,
    write_gpkg,
)


def _records(session: Session, model_name: str) -> tuple[list[Detection], list[dict[str, Any]]]:
    source = session.name or (Path(session.path).name if session.path else "")
    dets, props = [], []
    for item in session.found:
        dets.append(item.detection)
        props.append(provenance_properties(session, item, model_name) | {"source": source})
    return dets, props


def provenance_properties(session: Session, item: Found, model_name: str) -> dict[str, Any]:
    """Where a feature came from and how far it was reviewed: ``source_kind`` (``model`` or
    ``analyst``), ``origin`` (``chat``, ``scene`` or ``analyst``), ``model`` and chat ``turn`` (none
    for the analyst's boxes and whole-scene runs), the ``prompt``, the review ``status``
    (``pending`` / ``accepted``), ``edited`` (1 when the analyst moved or relabelled a model's box)
    and the analyst's ``description``."""
    return {"prompt": item.prompt, "turn": item.turn,
            "source_kind": "analyst" if item.source == ANALYST else "model", "origin": item.source,
            "model": found_model(item, model_name), "status": item.status, "edited": int(item.edited),
            "description": description(session, item)}


def _note(session: Session, skipped: list[Skipped]) -> str:
    """What was written, what was left out and, without georeferencing, that it is in pixels.
    Raises ValueError when every detection was left out (nothing worth a file)."""
    count = len(session.found) - len(skipped)
    if not count:
        raise ValueError(f"nothing to export: {skipped_note(skipped)}")
    note = " ".join(filter(None, [f"{count} detection{'s' if count != 1 else ''} exported.",
                                  skipped_note(skipped)]))
    info = session.info
    if info is not None and raster_to_map(info.transform, info.crs, info.gcps, info.gcps_crs) is not None:
        return note
    return f"{note} {PIXEL_SPACE_NOTE}"


def _raster_size(session: Session) -> tuple[int, int] | None:
    return (session.info.width, session.info.height) if session.info is not None else None


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
    georeferenced, else (or with ``pixel_space``) full-raster pixels with a note. Detections that
    cannot be placed are listed in its ``skipped`` member instead."""
    dets, props = _records(session, model_name)
    info = session.info
    to_lonlat = None
    if info is not None and not pixel_space:
        to_lonlat = raster_to_lonlat(info.transform, info.crs, info.gcps, info.gcps_crs)
    return feature_collection(dets, props, to_lonlat=to_lonlat, raster_size=_raster_size(session))


@contextmanager
def _written_for_the_user() -> Iterator[None]:
    """A failed write (:class:`~earthgpt.vector_export.WriteError`: a full disk …) as the one-line
    ValueError the app shows; the file is whole or absent
    (:func:`~earthgpt.vector_export.replaced_when_written`)."""
    try:
        yield
    except WriteError as err:
        raise ValueError(str(err)) from err


def export_geojson(session: Session, out_dir: str | Path, model_name: str) -> tuple[Path, str]:
    """Write ``<image>_detections.geojson`` into ``out_dir``; returns the path and a note for the user."""
    _check(session)
    collection = session_geojson(session, model_name)
    note = _note(session, collection.get("skipped", []))
    path = file_in(out_dir, f"{_stem(session)}_detections.geojson")
    with _written_for_the_user():
        write_geojson(path, collection)
    return path, note


def export_gpkg(session: Session, out_dir: str | Path, model_name: str) -> tuple[Path, str]:
    """Write ``<image>_detections.gpkg`` (native CRS) into ``out_dir``; returns the path and a note.
    Nothing is written when no detection can be (the note's ValueError comes first)."""
    _check(session)
    path = file_in(out_dir, f"{_stem(session)}_detections.gpkg")
    dets, props = _records(session, model_name)
    info = session.info
    mapped = raster_to_map(info.transform, info.crs, info.gcps, info.gcps_crs)
    to_map, crs = mapped if mapped else (None, None)
    note = _note(session, placed_polygons(dets, props, to_map, _raster_size(session))[1])
    with _written_for_the_user():
        write_gpkg(str(path), dets, props, to_map=to_map, crs=crs, raster_size=_raster_size(session))
    return path, note
