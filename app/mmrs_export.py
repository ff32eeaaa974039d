"""The analyst's reviewed annotations as MMRS training records (the app's ``Export MMRS``).

One record per window the analyst worked in, written into a folder ``<image>_mmrs/`` (zipped for
download) as ``records.jsonl`` (schema: ``docs/MMRS.md``) and ``images/<image>__<col>_<row>_<w>x<h>``:
the window's crop. The records' ``image_root`` is the folder's name, so
``earthgpt mmrs build --source mmrs=<folder>`` and training (``data.sources: [mmrs=<folder>]``)
read the set and find its images.

- **Crops** hold the window exactly as the app read it for the model: the same bands, the same
  decimation to at most :data:`app.handlers.VIEW_SIZE` pixels a side, the raster's own data type,
  nodata and georeferencing, and the VH sibling of a SAR VV file; an 8-bit picture (JPEG, PNG)
  becomes a PNG. So :func:`earthgpt.raster.model_image` gives training the pixels the model saw.
- **Boxes**: accepted annotations with a class (:mod:`app.annotations`). The windows are the
  current one, those of the chat turns that found accepted boxes and those the analyst drew boxes
  in. A box goes into a window's record when at least half of it lies inside, clipped to the
  window (an oriented box stays a rectangle at its own angle). A window's accepted boxes are its
  complete labelling (its detection answer lists them all): review a window fully before exporting
  it.
- **Turns** (:func:`earthgpt.data.builder.to_record`, no template turns): detection with HBBs, and
  with OBBs when any box is oriented (HBBs then count as axis-aligned OBBs); for each box with a
  description (the grounding prompt's referring expression, or the analyst's), grounding and a
  region caption. Each record's ``provenance`` lists the source image, the window and where each
  object came from.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
import shapely.affinity
from PIL import Image
from rasterio.enums import ColorInterp

from app.annotations import description
from app.export import provenance_properties
from app.handlers import VIEW_SIZE, UserError, require_image
from app.session_io import Found, Session
from app.session_io import Window as WindowTuple
from earthgpt.box_spaces import placed_by_affine, raster_to_image
from earthgpt.data.builder import to_record, write_jsonl
from earthgpt.data.records import Sample, hbb_entry, obb_entry, px
from earthgpt.geometry import HBB, OBB, Box, obb_from_corners
from earthgpt.raster import RasterInfo, Tile, inspect, model_source, overview_shape, plan_bands, read_window
from earthgpt.sensors import Sensor

DATASET = "analyst"
LICENCE = "unknown: the source image's licence applies"
MIN_INSIDE = 0.5
"""A box belongs to a window's record when at least this fraction of its area lies inside."""


def _safe(stem: str) -> str:
    """A file stem safe in a path; the polarisation token of a SAR file name (``_VV``) is kept."""
    return re.sub(r"[^\w.-]+", "_", stem) or "image"


def _windows(session: Session, accepted: list[Found]) -> list[WindowTuple]:
    """The current window, then the windows of turns and analyst boxes among ``accepted``, once each."""
    windows = [session.window]
    for item in accepted:
        if item.window is not None:
            windows.append(item.window)
        elif item.turn is not None and 1 <= item.turn <= len(session.turns):
            windows.append(session.turns[item.turn - 1].window)
    return list(dict.fromkeys(tuple(w) for w in windows if w))


def clip_to_window(box: Box, window: WindowTuple) -> Box | None:
    """``box`` clipped to ``window`` (full-raster pixels) when at least :data:`MIN_INSIDE` of it lies
    inside, else None. A clipped OBB keeps its orientation: it becomes the smallest rectangle at the
    box's own angle around what is inside, so it stays a rectangle along the object's axes (where
    the window's edge cuts it at a slant, a corner of that rectangle lies past the edge; the record
    text's grid clamps it, drawing clips it)."""
    col, row, width, height = window
    frame = shapely.box(col, row, col + width, row + height)
    shape = shapely.box(*box.as_list()) if isinstance(box, HBB) else box.polygon()
    inside = shape.intersection(frame)
    if shape.area <= 0 or inside.area < MIN_INSIDE * shape.area:
        return None
    if inside.equals(shape):
        return box
    if isinstance(box, HBB):
        return HBB(*inside.bounds)
    return _rectangle_at_angle(inside, box.angle_deg)


def _rectangle_at_angle(shape: shapely.Geometry, angle_deg: float) -> OBB:
    """The smallest rectangle turned ``angle_deg`` (as :attr:`OBB.angle_deg`) that holds ``shape``."""
    upright = shapely.affinity.rotate(shape, -angle_deg, origin=(0, 0))
    x1, y1, x2, y2 = upright.bounds
    corners = shapely.affinity.rotate(shapely.box(x1, y1, x2, y2), angle_deg, origin=(0, 0))
    return obb_from_corners(corners.exterior.coords[:4])


def _objects(session: Session, items: list[Found], window: WindowTuple, size: tuple[int, int],
             model_name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``annotations`` of one window's record (crop pixels) and each object's provenance."""
    tile = Tile(*window)
    hbbs, obbs, referring, origins = [], [], [], []
    oriented = False
    for item in items:
        clipped = clip_to_window(item.detection.box, window)
        if clipped is None:
            continue
        oriented = oriented or isinstance(item.detection.box, OBB)
        box = raster_to_image(clipped, tile, size)
        label = item.detection.label
        hbbs.append(hbb_entry(label, box if isinstance(box, HBB) else box.to_hbb()))
        obbs.append(obb_entry(label, box if isinstance(box, OBB) else box.to_obb()))
        text = description(session, item)
        if text:
            hbb = box if isinstance(box, HBB) else box.to_hbb()
            referring.append({"expression": text, "label": label, "xyxy_px": [px(v) for v in hbb.as_list()]})
        origin = provenance_properties(session, item, model_name)
        origins.append({"label": label, **{k: origin[k] for k in ("source_kind", "origin", "model", "turn",
                                                                  "edited")}})
    annotations: dict[str, Any] = {"objects_hbb": hbbs} if hbbs else {}
    if oriented and obbs:  # this window's own boxes hold an oriented one (not some other window's)
        annotations["objects_obb"] = obbs
    if referring:
        annotations["referring"] = referring
    return annotations, origins


def _write_band_file(path: str | Path, info: RasterInfo, window: WindowTuple, size: tuple[int, int],
                     bands: list[int] | None, target: Path) -> Path:
    """One window of ``path`` read as the app reads it, written to ``target`` plus ``.tif`` (``.png``
    for a picture)."""
    col, row, width, height = window
    array, _ = read_window(path, col, row, width, height, out_size=size, bands=bands)
    indexes = bands or list(range(1, info.count + 1))
    if info.is_photo:
        pixels = np.moveaxis(np.ma.filled(array, 0).astype(np.uint8), 0, -1)
        target = target.with_name(target.name + ".png")
        Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(target)
        return target
    target = target.with_name(target.name + ".tif")
    profile: dict[str, Any] = {"driver": "GTiff", "width": size[0], "height": size[1], "count": len(indexes),
                               "dtype": info.dtypes[0], "nodata": info.nodata, "compress": "deflate"}
    if info.crs and placed_by_affine(info.transform, info.crs):
        profile["crs"] = info.crs
        profile["transform"] = (info.affine @ rasterio.Affine.translation(col, row)
                                @ rasterio.Affine.scale(width / size[0], height / size[1]))
    mask = np.ma.getmaskarray(array)
    fill = info.nodata if info.nodata is not None else 0
    with rasterio.open(target, "w", **profile) as out:
        out.write(np.ma.filled(array, fill).astype(info.dtypes[0]))
        out.colorinterp = _colorinterp(info, bands)
        if bands is None:
            out.descriptions = tuple(info.descriptions)
        if info.nodata is None and "alpha" not in info.colorinterp and mask.any():
            out.write_mask(np.where(mask.all(axis=0), 0, 255).astype(np.uint8))
    return target


def _colorinterp(info: RasterInfo, bands: list[int] | None) -> list[ColorInterp]:
    """The crop's colour interpretation: the file's own when every band is kept, else the chosen
    bands named red, green, blue (so the crop's automatic choice is the app's), and the alpha band."""
    names = [str(name).lower() for name in info.colorinterp]
    if bands is None:
        chosen = names
    else:
        rgb = iter(("red", "green", "blue") if len([b for b in bands if names[b - 1] != "alpha"]) == 3
                   else ("gray",))
        chosen = ["alpha" if names[b - 1] == "alpha" else next(rgb, "undefined") for b in bands]
    return [ColorInterp[name] if name in ColorInterp.__members__
            else ColorInterp.undefined for name in chosen]


def write_crop(session: Session, window: WindowTuple, folder: Path) -> tuple[Path, tuple[int, int]]:
    """The window's crop (and its SAR VH sibling) in ``folder``; returns its path and size."""
    info = require_image(session)
    size = overview_shape(window[2], window[3], VIEW_SIZE)
    suffix = f"__{window[0]}_{window[1]}_{window[2]}x{window[3]}"
    bands, _ = plan_bands(info, session.sensor, session.bands)
    crop = _write_band_file(session.path, info, window, size, bands, folder / (_safe(Path(session.path).stem)
                                                                              + suffix))
    pair = model_source(session.path, session.sensor).pair
    if pair is not None:
        _write_band_file(pair, inspect(pair), window, size, None, folder / (_safe(pair.stem) + suffix))
    return crop, size


def _record(session: Session, window: WindowTuple, items: list[Found], folder: Path,
            model_name: str) -> dict[str, Any] | None:
    """The MMRS record of one window (its crop written into ``folder/images``), None without boxes."""
    if not any(clip_to_window(item.detection.box, window) for item in items):
        return None
    crop, size = write_crop(session, window, folder / "images")
    annotations, origins = _objects(session, items, window, size, model_name)
    key = f"{_safe(Path(session.name or session.path).stem)}/{window[0]}_{window[1]}_{window[2]}x{window[3]}"
    sample = Sample(id=f"{DATASET}/{key}", image_root=folder.name, image=f"images/{crop.name}",
                    width=size[0], height=size[1], sensor=Sensor(session.sensor), dataset=DATASET,
                    licence=LICENCE, split="train", annotations=annotations)
    record = to_record(sample, [], templates=False)
    if record is not None:
        record["provenance"] = {"source_image": session.name, "window": list(window), "model": model_name,
                                "objects": origins}
    return record


def export_mmrs(session: Session, out_dir: str | Path, model_name: str) -> tuple[Path, str]:
    """Write ``<image>_mmrs/`` and ``<image>_mmrs.zip`` into ``out_dir``; returns the zip and a note."""
    require_image(session)
    accepted = [f for f in session.found if f.status == "accepted" and f.detection.label.strip()]
    if not accepted:
        raise UserError("nothing reviewed yet: accept detections or draw boxes of your own in the Review "
                        "tab before exporting training records")
    folder = Path(out_dir) / f"{_safe(Path(session.name or session.path).stem)}_mmrs"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "images").mkdir(parents=True)
    windows = _windows(session, accepted)
    records = [r for w in windows if (r := _record(session, w, accepted, folder, model_name)) is not None]
    if not records:  # nothing to train on: no archive of an empty set (review of 2026-12-04)
        shutil.rmtree(folder, ignore_errors=True)
        raise UserError(f"none of the {len(accepted)} accepted box(es) lies in this window or in a window "
                        "they were found or typed in: open a window on them and export again")
    written = write_jsonl(records, folder / "records.jsonl")
    placed = {i for i, f in enumerate(accepted) for w in windows if clip_to_window(f.detection.box, w)}
    archive = Path(shutil.make_archive(str(folder), "zip", folder.parent, folder.name))
    pending = sum(f.status == "pending" for f in session.found)
    note = [f"{written} training record(s) from {len(placed)} accepted box(es) in {written} window(s)."]
    if len(placed) < len(accepted):
        note.append(f"{len(accepted) - len(placed)} accepted box(es) lie outside these windows: open a "
                    "window on them and export again.")
    if pending:
        note.append(f"{pending} pending detection(s) left out: accept them to include them.")
    return archive, " ".join(note)
