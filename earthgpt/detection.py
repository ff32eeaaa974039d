"""Whole-scene detection: tile a large raster, detect per tile, merge across tiles, write vectors.

The model only ever sees one tile. Its answer is text with boxes on the 0–1000 grid over that
tile; :func:`tile_to_raster` places each box back into *full-raster pixels* (x = column,
y = row, pixel corners at integer coordinates, the convention of rasterio's affine transforms).
Objects cut by a tile border are found twice in overlapping tiles; :func:`merge_detections` keeps
one per object with per-class NMS. :func:`write_vector` turns raster-pixel detections into
GeoJSON (RFC 7946, lon/lat) or GeoPackage (the raster's own CRS).

This module reads no files itself: the caller passes a ``read_tile`` function (rasterio window
reads in the CLI and the app) and an ``answer`` function (the model), so it is tested with
plain arrays and scripted answers.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from earthgpt.geometry import HBB, OBB, Box, Detection, grid_to_pixel, nms, obb_from_corners, obb_to_cxcywha
from earthgpt.georef import Points, PointsFn
from earthgpt.textbox import parse_detections


@dataclass(frozen=True)
class Tile:
    """A window of the full raster, in raster pixels (offsets and size)."""

    col_off: int
    row_off: int
    width: int
    height: int


def _starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)  # the last tile ends exactly at the raster edge
    return starts


def tile_grid(width: int, height: int, tile: int = 512, overlap: int = 64) -> list[Tile]:
    """Tiles of ``tile`` pixels overlapping by ``overlap`` that cover a ``width`` × ``height`` raster.

    Row-major order. The last tile of each row/column is shifted back to end at the raster edge
    (so every tile is full-size unless the raster is smaller than one tile).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"raster size must be positive, got {width}x{height}")
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"expected tile > 0 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    stride = tile - overlap
    return [
        Tile(col, row, min(tile, width), min(tile, height))
        for row in _starts(height, tile, stride)
        for col in _starts(width, tile, stride)
    ]


def translate_box(box: Box, dx: float, dy: float) -> Box:
    """Shift a pixel box by ``(dx, dy)``; OBB corners are re-ordered by the paper's rule."""
    if isinstance(box, HBB):
        return HBB(box.x1 + dx, box.y1 + dy, box.x2 + dx, box.y2 + dy)
    return obb_from_corners([(x + dx, y + dy) for x, y in box.corners])


def tile_to_raster(det: Detection, tile: Tile) -> Detection:
    """A detection on the 0–1000 grid over ``tile`` → the same detection in full-raster pixels."""
    pixel = grid_to_pixel(det.box, tile.width, tile.height)
    return Detection(det.label, translate_box(pixel, tile.col_off, tile.row_off), det.score)


def box_corners(box: Box) -> list[tuple[float, float]]:
    """The four corners of a box (HBB clockwise on screen from top-left; OBB in its stored order)."""
    if isinstance(box, HBB):
        return [(box.x1, box.y1), (box.x2, box.y1), (box.x2, box.y2), (box.x1, box.y2)]
    return [(float(x), float(y)) for x, y in box.corners]


def box_angle(box: Box) -> float:
    """An OBB's angle in degrees as :func:`earthgpt.geometry.obb_to_cxcywha` gives it; 0 for an HBB."""
    return 0.0 if isinstance(box, HBB) else round(obb_to_cxcywha(box)[4], 3)


def box_kind(box: Box) -> str:
    """``"hbb"`` or ``"obb"``."""
    return "obb" if isinstance(box, OBB) else "hbb"


def edge_margin(box: Box, tile: Tile, raster_width: int, raster_height: int) -> float:
    """Distance in pixels from a raster-pixel box to the nearest tile border *inside* the raster.

    A box touching a tile border that is not the raster's border was probably cut by the tile, so
    when two tiles see the same object the one that sees it whole should win the merge.
    """
    xs, ys = zip(*box_corners(box), strict=True)
    gaps = []
    if tile.col_off > 0:
        gaps.append(min(xs) - tile.col_off)
    if tile.row_off > 0:
        gaps.append(min(ys) - tile.row_off)
    if tile.col_off + tile.width < raster_width:
        gaps.append(tile.col_off + tile.width - max(xs))
    if tile.row_off + tile.height < raster_height:
        gaps.append(tile.row_off + tile.height - max(ys))
    return max(0.0, min(gaps)) if gaps else float(max(tile.width, tile.height))


def merge_detections(
    dets: Sequence[Detection], iou_threshold: float = 0.5, priorities: Sequence[float] | None = None
) -> list[Detection]:
    """Per-class NMS over detections from overlapping tiles (all in one pixel space).

    The rank is the detection's score where the model gave one, else ``priorities[i]`` (e.g. the
    :func:`edge_margin`), else input order. Labels are compared case-insensitively.
    """
    if priorities is not None and len(priorities) != len(dets):
        raise ValueError(f"expected one priority per detection: {len(dets)} detections, {len(priorities)}")
    by_class: dict[str, list[int]] = {}
    for i, det in enumerate(dets):
        by_class.setdefault(det.label.strip().lower(), []).append(i)
    kept: list[int] = []
    for indices in by_class.values():
        ranks = [_rank(dets[i], priorities[i] if priorities else -i) for i in indices]
        kept.extend(indices[k] for k in nms([dets[i].box for i in indices], ranks, iou_threshold))
    return [dets[i] for i in sorted(kept)]


def _rank(det: Detection, fallback: float) -> float:
    return float(det.score) if det.score is not None else float(fallback)


@dataclass
class SceneResult:
    """Merged detections of a whole scene, in full-raster pixels, with what happened per tile."""

    detections: list[Detection]
    tiles: int
    tiles_empty: int = 0
    lines_skipped: int = 0
    answers: list[tuple[Tile, str]] = field(default_factory=list)
    answers_at_limit: int = 0
    """Answers that stopped at the answer-length limit: their tiles may have lost boxes."""

    def counts(self) -> dict[str, int]:
        """Objects per class, most frequent first."""
        return dict(Counter(det.label for det in self.detections).most_common())

    def limit_note(self) -> str:
        """A warning for the user when some answers hit the length limit, else ``""``."""
        if not self.answers_at_limit:
            return ""
        return (f"{self.answers_at_limit} of {len(self.answers)} window answers stopped at the answer "
                "length limit (max new tokens), so boxes may be missing there: raise the limit or use "
                "smaller tiles")


class Answer(str):
    """An answer text that also says whether generation stopped at the ``max_new_tokens`` limit."""

    hit_limit: bool

    def __new__(cls, text: str, hit_limit: bool = False) -> Answer:
        answer = super().__new__(cls, text)
        answer.hit_limit = hit_limit
        return answer


def _batches(items: Sequence[Tile], size: int) -> Iterator[list[Tile]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _wanted(label: str, classes: Sequence[str] | None) -> bool:
    return not classes or label.strip().lower() in {c.strip().lower() for c in classes}


def detect_scene(
    tiles: Sequence[Tile],
    read_tile: Callable[[Tile], np.ndarray | None],
    answer: Callable[[list[np.ndarray]], list[str]],
    *,
    raster_size: tuple[int, int],
    batch: int = 4,
    classes: Sequence[str] | None = None,
    iou_threshold: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
) -> SceneResult:
    """Run detection tile by tile, ``batch`` tiles per model call, and merge across tiles.

    ``read_tile`` returns the model-ready uint8 H×W×3 image of a tile, or ``None`` for a tile with
    no valid data (skipped and counted). ``answer`` maps a list of images to one answer text
    each. ``classes`` keeps only those labels. ``progress(done, total)`` is called after each batch.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    width, height = raster_size
    found: list[Detection] = []
    margins: list[float] = []
    result = SceneResult(detections=[], tiles=len(tiles))
    done = 0
    for group in _batches(tiles, batch):
        images = [(tile, read_tile(tile)) for tile in group]
        ready = [(tile, image) for tile, image in images if image is not None]
        result.tiles_empty += len(images) - len(ready)
        texts = answer([image for _, image in ready]) if ready else []
        if len(texts) != len(ready):
            raise RuntimeError(f"answer() returned {len(texts)} texts for {len(ready)} images")
        for (tile, _), text in zip(ready, texts, strict=True):
            result.answers.append((tile, text))
            result.answers_at_limit += bool(getattr(text, "hit_limit", False))
            parsed = parse_detections(text)
            result.lines_skipped += parsed.skipped
            for det in parsed.detections:
                if _wanted(det.label, classes):
                    placed = tile_to_raster(det, tile)
                    found.append(placed)
                    margins.append(edge_margin(placed.box, tile, width, height))
        done += len(group)
        if progress is not None:
            progress(done, len(tiles))
    result.detections = merge_detections(found, iou_threshold, margins)
    return result


def _polygon(points: Points, ccw: bool) -> Any:
    import shapely
    from shapely.geometry.polygon import orient

    polygon = shapely.Polygon(points)
    if not polygon.is_valid:
        polygon = shapely.make_valid(polygon).convex_hull
    return orient(polygon, sign=1.0 if ccw else -1.0)


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

    With ``to_lonlat`` (e.g. :func:`earthgpt.georef.raster_to_lonlat`): RFC 7946, lon/lat in
    EPSG:4326, exterior rings counter-clockwise. Without: pixel coordinates (y down, rings
    clockwise on screen) and a top-level ``note`` saying so. Each feature gets ``properties[i]``
    plus ``class``, ``score``, ``box`` (hbb/obb) and ``angle``.
    """
    if len(properties) != len(dets):
        raise ValueError(f"expected one properties dict per detection: {len(dets)} vs {len(properties)}")
    features = []
    for det, extra in zip(dets, properties, strict=True):
        ring = box_corners(det.box)
        polygon = _polygon(to_lonlat(ring) if to_lonlat else ring, ccw=True)
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
    coordinates, e.g. :func:`earthgpt.georef.raster_to_map`); in pixel space with no CRS when
    ``to_map`` is None."""
    import pyogrio.raw
    import shapely

    if len(properties) != len(dets):
        raise ValueError(f"expected one properties dict per detection: {len(dets)} vs {len(properties)}")
    rings = [box_corners(d.box) for d in dets]
    polygons = [_polygon(to_map(ring) if to_map else ring, ccw=True) for ring in rings]
    rows = [_attributes(d, extra) for d, extra in zip(dets, properties, strict=True)]
    names = list(dict.fromkeys(name for row in rows for name in row)) or ["class"]
    columns = [_column([row.get(name) for row in rows]) for name in names]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*'crs' was not provided.*")  # pixel space on purpose
        pyogrio.raw.write(
            path, shapely.to_wkb(np.array(polygons, dtype=object)), columns, names, layer=layer,
            driver="GPKG", geometry_type="Polygon", crs=_crs_text(crs) if to_map and crs else None,
        )


def _crs_text(crs: Any) -> str:
    return crs.to_wkt() if hasattr(crs, "to_wkt") else str(crs)


def _column(values: list[Any]) -> np.ndarray:
    """One attribute column: integers, floats (NaN = null) when all are numbers, else strings."""
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.int64)
    if values and all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values):
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return np.array(["" if v is None else str(v) for v in values], dtype=object)


def chat_answerer(
    new_chat: Callable[[], Any], prompt: str, max_new_tokens: int = 512
) -> Callable[[list[np.ndarray]], list[str]]:
    """An ``answer`` function for :func:`detect_scene`: each tile gets a fresh chat and one prompt.

    ``new_chat()`` returns an object with ``set_image(rgb)`` and ``ask(text, max_new_tokens=…)``,
    such as ``earthgpt.inference.ChatSession``; a fresh one per tile keeps tiles independent.
    Each text is an :class:`Answer` whose ``hit_limit`` is True when the chat's ``answer_ids``
    (the answer's tokens) reached ``max_new_tokens``.
    """

    def answer(images: list[np.ndarray]) -> list[str]:
        texts: list[str] = []
        for image in images:
            chat = new_chat()
            chat.set_image(image)
            text = str(chat.ask(prompt, max_new_tokens=max_new_tokens))
            produced = getattr(chat, "answer_ids", None)
            texts.append(Answer(text, produced is not None and len(produced) >= max_new_tokens))
        return texts

    return answer
