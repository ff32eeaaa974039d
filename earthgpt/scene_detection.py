"""Whole-scene detection: detect per window of a large raster, merge across windows.

The model only ever sees one window (:class:`earthgpt.raster.Tile`, from
:func:`earthgpt.raster.tile_grid`). Its answer is text with boxes on the 0–1000 grid over that
window; :func:`tile_to_raster` places each box back into *full-raster pixels* (x = column,
y = row, pixel corners at integer coordinates, the convention of rasterio's affine transforms).
Objects cut by a window border are found twice in overlapping windows; :func:`merge_detections`
keeps one per object with per-class NMS. :mod:`earthgpt.vector_export` writes the result.

This module reads no files itself: the caller passes a ``read_tile`` function (rasterio window
reads in the CLI and the app) and an ``answer`` function (the model), so it is tested with
plain arrays and scripted answers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from earthgpt.box_spaces import grid_to_raster
from earthgpt.geometry import Box, Detection, box_corners, nms
from earthgpt.raster import Tile
from earthgpt.textbox import parse_detections


def tile_to_raster(det: Detection, tile: Tile) -> Detection:
    """A detection on the 0–1000 grid over ``tile`` → the same detection in full-raster pixels
    (:func:`earthgpt.box_spaces.grid_to_raster`)."""
    return Detection(det.label, grid_to_raster(det.box, tile), det.score)


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
