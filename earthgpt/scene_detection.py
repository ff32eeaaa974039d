"""Whole-scene detection: detect per window of a large raster, merge across windows.

The model only ever sees one window (:class:`earthgpt.raster.Tile`, from
:func:`earthgpt.raster.tile_grid`). Its answer is text with boxes on the 0–1000 grid over that
window; :func:`tile_to_raster` places each box back into *full-raster pixels* (x = column,
y = row, pixel corners at integer coordinates, the convention of rasterio's affine transforms).
Objects cut by a window border are found twice in overlapping windows: :func:`join_cut_boxes`
drops a piece that another window sees whole, or joins the pieces when no window does (matched
where both windows see the same pixels), and :func:`merge_detections` keeps one per object with
per-class NMS. :mod:`earthgpt.vector_export` writes the result.

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
import shapely

from earthgpt.answer_stream import LineRule, repeats_a_line
from earthgpt.box_spaces import grid_to_raster
from earthgpt.geometry import HBB, Box, Detection, box_corners, nms, obb_from_corners
from earthgpt.raster import Tile
from earthgpt.textbox import parse_detections

DEFAULT_BATCH_SIZE = 16
"""Windows answered together (``earthgpt detect --batch-size``, the app). Nano on one CPU thread:
1.34, 1.00 and 0.89 s per window at 8, 16 and 32; 16 keeps most of the gain and the app's progress
still moves every few windows' worth of seconds (BENCHMARKS.md, "Whole-scene detection")."""


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


CUT_FRACTION = 0.01
"""A box within this fraction of its window's side (at least 2 px) of an inner window border counts
as cut by it (:func:`join_cut_boxes`): the grid has 1,000 steps a side, so a box the model ends at
the border lands within a pixel of it, and a little more is allowed for its imprecision."""


def join_cut_boxes(
    dets: Sequence[Detection], tiles: Sequence[Tile], margins: Sequence[float], overlap: float = 0.5,
) -> tuple[list[Detection], list[float]]:
    """One detection per object cut by a window border, before :func:`merge_detections`.

    A box cut by an inner border of its window (``margins[i]``, its :func:`edge_margin`, within
    :data:`CUT_FRACTION` of the window) is matched with the boxes of the same class from every
    other window that overlaps its own, on the pixels both windows see: the two boxes clipped to
    that shared strip must overlap with IoU ≥ ``overlap``. Plain IoU cannot tell a piece from its
    whole when less than half of the object shows in one window. Of each set of matched boxes, the
    cut ones are dropped when any is whole (a window saw the object entire); when all are cut (no
    window holds the object), they are joined into one box: the enclosing HBB of the pieces, or
    for oriented boxes the smallest rotated rectangle around them, ranked as a whole box. Returns
    the detections and their merge priorities, in input order with each joined box at its first
    piece's place.
    """
    if not len(dets) == len(tiles) == len(margins):
        raise ValueError(
            f"expected one tile and margin per detection: {len(dets)}, {len(tiles)}, {len(margins)}"
        )
    cut = [m <= max(2.0, CUT_FRACTION * max(t.width, t.height)) for m, t in zip(margins, tiles, strict=True)]
    parent = list(range(len(dets)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    bounds = np.array([_extent(d.box) for d in dets], dtype=float).reshape(-1, 4)
    frames = np.array([(t.col_off, t.row_off, t.col_off + t.width, t.row_off + t.height) for t in tiles],
                      dtype=float).reshape(-1, 4)
    labels = [d.label.strip().lower() for d in dets]
    neighbours = _boxes_of_overlapping_windows(tiles, frames)
    for i in (k for k, is_cut in enumerate(cut) if is_cut):
        others = neighbours(tiles[i])
        shared = np.concatenate([np.maximum(frames[i, :2], frames[others, :2]),
                                 np.minimum(frames[i, 2:], frames[others, 2:])], axis=1)
        box, own = bounds[others], bounds[i]
        near = np.flatnonzero(
            (box[:, 0] < shared[:, 2]) & (box[:, 2] > shared[:, 0])
            & (box[:, 1] < shared[:, 3]) & (box[:, 3] > shared[:, 1])
            & (own[0] < shared[:, 2]) & (own[2] > shared[:, 0])
            & (own[1] < shared[:, 3]) & (own[3] > shared[:, 1])
        )
        for k in near:
            j = int(others[k])
            if labels[j] == labels[i] and root(i) != root(j) and \
                    _clipped_iou(dets[i].box, dets[j].box, shared[k]) >= overlap:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(dets)):
        groups.setdefault(root(i), []).append(i)
    out: dict[int, tuple[Detection, float]] = {}
    for members in groups.values():
        whole = [i for i in members if not cut[i]]
        if len(members) == 1 or whole:
            out.update((i, (dets[i], margins[i])) for i in (whole or members))
            continue
        joined = _enclosing(dets[i].box for i in members)
        scores = [dets[i].score for i in members if dets[i].score is not None]
        side = max(max(tiles[i].width, tiles[i].height) for i in members)
        score = max(scores) if scores else None
        out[members[0]] = (Detection(dets[members[0]].label, joined, score), float(side))
    order = sorted(out)
    return [out[i][0] for i in order], [out[i][1] for i in order]


def _boxes_of_overlapping_windows(tiles: Sequence[Tile], frames: np.ndarray) -> Callable[[Tile], np.ndarray]:
    """``neighbours(tile)``: the indices of the boxes found in the other windows that overlap
    ``tile`` (``frames``: each box's window as xyxy), so that a cut box is compared with a few
    dozen boxes, not with every box of the scene."""
    distinct = list(dict.fromkeys(tiles))
    place = {tile: k for k, tile in enumerate(distinct)}
    owner = np.array([place[tile] for tile in tiles], dtype=int)
    first = {}
    for i, k in enumerate(owner.tolist()):
        first.setdefault(k, i)
    edges = frames[[first[k] for k in range(len(distinct))]].reshape(-1, 4)
    touching = ((edges[:, None, 0] < edges[None, :, 2]) & (edges[:, None, 2] > edges[None, :, 0])
                & (edges[:, None, 1] < edges[None, :, 3]) & (edges[:, None, 3] > edges[None, :, 1]))
    np.fill_diagonal(touching, False)
    found: dict[int, np.ndarray] = {}

    def neighbours(tile: Tile) -> np.ndarray:
        k = place[tile]
        if k not in found:
            found[k] = np.flatnonzero(touching[k][owner])
        return found[k]

    return neighbours


def _clipped_iou(a: Box, b: Box, region: np.ndarray) -> float:
    """IoU of two boxes clipped to the xyxy ``region``."""
    if isinstance(a, HBB) and isinstance(b, HBB):  # box arithmetic: most boxes, and fast
        x1, y1, x2, y2 = region
        ca = (max(a.x1, x1), max(a.y1, y1), min(a.x2, x2), min(a.y2, y2))
        cb = (max(b.x1, x1), max(b.y1, y1), min(b.x2, x2), min(b.y2, y2))
        iw = max(0.0, min(ca[2], cb[2]) - max(ca[0], cb[0]))
        ih = max(0.0, min(ca[3], cb[3]) - max(ca[1], cb[1]))
        area = [max(0.0, c[2] - c[0]) * max(0.0, c[3] - c[1]) for c in (ca, cb)]
        union = area[0] + area[1] - iw * ih
        return float(iw * ih / union) if union > 0 else 0.0
    frame = shapely.box(*region)
    pa, pb = (shapely.intersection(shapely.Polygon(box_corners(x)).buffer(0), frame) for x in (a, b))
    union = shapely.area(shapely.union(pa, pb))
    return float(shapely.area(shapely.intersection(pa, pb)) / union) if union > 0 else 0.0


def _enclosing(boxes: Iterator[Box]) -> Box:
    """The enclosing HBB of HBBs; the smallest rotated rectangle around anything else."""
    boxes = list(boxes)
    if all(isinstance(b, HBB) for b in boxes):
        x1, y1, x2, y2 = zip(*(_extent(b) for b in boxes), strict=True)
        return HBB(min(x1), min(y1), max(x2), max(y2))
    points = shapely.MultiPoint([p for b in boxes for p in box_corners(b)])
    rectangle = shapely.minimum_rotated_rectangle(points)
    return obb_from_corners(list(rectangle.exterior.coords)[:4])


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
    invalid: Counter[str] = field(default_factory=Counter)
    """Boxes of the wanted classes left out as not usable, by reason (``zero area``, …)."""
    answers: list[tuple[Tile, str]] = field(default_factory=list)
    answers_at_limit: int = 0
    """Answers that stopped at the answer-length limit: their tiles may have lost boxes."""
    answers_stopped: int = 0
    """Answers ended early by the stop rule (:func:`detection_stop_rule`: the model repeated itself);
    the lines before the repetition are kept."""
    tiles_done: int = 0
    """Windows done so far (answered or found empty); ``tiles`` once a run is complete."""
    cancelled: bool = False
    """The run was cancelled: the detections are those of the windows done."""
    answering: int = 0
    """Windows being answered together now (the next batch, after ``tiles_done``); 0 when none."""

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

    def stop_note(self) -> str:
        """How many answers the stop rule ended early, else ``""`` (not a warning: those answers
        were repeating themselves, and what they said before is kept)."""
        if not self.answers_stopped:
            return ""
        return (f"{self.answers_stopped} of {len(self.answers)} window answers were stopped early because "
                "the model started repeating itself (the boxes before the repetition are kept)")

    def invalid_note(self) -> str:
        """How many boxes were left out as not usable and why, e.g. ``"21 boxes left out as not
        usable: zero area (20), off the image (1)"``; ``""`` when none were."""
        total = sum(self.invalid.values())
        if not total:
            return ""
        reasons = ", ".join(f"{why} ({n})" for why, n in self.invalid.most_common())
        return f"{total} box{'es' if total != 1 else ''} left out as not usable: {reasons}"


class Answer(str):
    """An answer text that also says whether generation stopped at the ``max_new_tokens`` limit
    (``hit_limit``) or was ended early by a stop rule (``stopped``)."""

    hit_limit: bool
    stopped: bool

    def __new__(cls, text: str, hit_limit: bool = False, stopped: bool = False) -> Answer:
        answer = super().__new__(cls, text)
        answer.hit_limit, answer.stopped = hit_limit, stopped
        return answer


def _batches(items: Sequence[Tile], size: int) -> Iterator[list[Tile]]:
    """As few batches of at most ``size`` as cover ``items``, in order, of near-equal sizes (25 tiles
    by 8 → 6, 6, 6, 7, not 8, 8, 8, 1: a lone last tile would forgo batched generation)."""
    count = -(-len(items) // size)
    for k in range(count):
        yield list(items[k * len(items) // count : (k + 1) * len(items) // count])


def _wanted(label: str, classes: Sequence[str] | None) -> bool:
    return not classes or label.strip().lower() in {c.strip().lower() for c in classes}


def iter_detect_scene(
    tiles: Sequence[Tile],
    read_tile: Callable[[Tile], np.ndarray | None],
    answer: Callable[[list[np.ndarray]], list[str]],
    *,
    raster_size: tuple[int, int],
    batch: int = DEFAULT_BATCH_SIZE,
    classes: Sequence[str] | None = None,
    iou_threshold: float = 0.5,
    cancelled: Callable[[], bool] | None = None,
) -> Iterator[SceneResult]:
    """Run detection tile by tile, at most ``batch`` tiles per model call (batches of near-equal
    sizes), merging across tiles as it goes.

    Yields the result so far (one object, updated in place): first before any window (``tiles_done``
    0), then after each batch, with the detections of the windows done merged. ``read_tile``
    returns the model-ready uint8 H×W×3 image of a tile, or ``None`` for a tile with no valid data
    (skipped and counted). ``answer`` maps a list of images to one answer text each. ``classes``
    keeps only those labels. ``answering`` says how many windows the next batch holds. When
    ``cancelled()`` turns True the answers being written are cut (by ``answer``), the run stops
    before the next batch and its last yield says ``cancelled``: what is done is kept.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    found: list[Detection] = []
    margins: list[float] = []
    owners: list[Tile] = []
    result = SceneResult(detections=[], tiles=len(tiles))
    groups = list(_batches(tiles, batch))
    result.answering = len(groups[0]) if groups else 0
    yield result
    for k, group in enumerate(groups):
        if cancelled is not None and cancelled():
            result.cancelled, result.answering = True, 0
            yield result
            return
        images = [(tile, read_tile(tile)) for tile in group]
        ready = [(tile, image) for tile, image in images if image is not None]
        result.tiles_empty += len(images) - len(ready)
        texts = answer([image for _, image in ready]) if ready else []
        if len(texts) != len(ready):
            raise RuntimeError(f"answer() returned {len(texts)} texts for {len(ready)} images")
        for (tile, _), text in zip(ready, texts, strict=True):
            _add_answer(result, tile, text, classes, found, margins, raster_size)
            owners.extend([tile] * (len(found) - len(owners)))
        result.tiles_done += len(group)
        joined, ranks = join_cut_boxes(found, owners, margins)
        result.detections = merge_detections(joined, iou_threshold, ranks)
        result.answering = len(groups[k + 1]) if k + 1 < len(groups) else 0
        if k + 1 == len(groups) and cancelled is not None and cancelled():
            result.cancelled = True  # the last batch's answers were cut: say so, not "done"
        yield result


def _add_answer(
    result: SceneResult, tile: Tile, text: str, classes: Sequence[str] | None, found: list[Detection],
    margins: list[float], raster_size: tuple[int, int],
) -> None:
    """Count one window's answer in ``result`` and add its wanted, usable boxes (in full-raster
    pixels) to ``found``, with their :func:`edge_margin` in ``margins``."""
    result.answers.append((tile, text))
    result.answers_at_limit += bool(getattr(text, "hit_limit", False))
    result.answers_stopped += bool(getattr(text, "stopped", False))
    parsed = parse_detections(text)
    result.lines_skipped += parsed.skipped
    result.invalid.update(bad.reason for bad in parsed.invalid if _wanted(bad.label, classes))
    for det in parsed.detections:
        if _wanted(det.label, classes):
            placed = tile_to_raster(det, tile)
            found.append(placed)
            margins.append(edge_margin(placed.box, tile, *raster_size))


def detect_scene(
    tiles: Sequence[Tile],
    read_tile: Callable[[Tile], np.ndarray | None],
    answer: Callable[[list[np.ndarray]], list[str]],
    *,
    raster_size: tuple[int, int],
    batch: int = DEFAULT_BATCH_SIZE,
    classes: Sequence[str] | None = None,
    iou_threshold: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> SceneResult:
    """:func:`iter_detect_scene` run to its end; ``progress(done, total)`` is called after each batch."""
    result = SceneResult(detections=[], tiles=len(tiles))
    for result in iter_detect_scene(tiles, read_tile, answer, raster_size=raster_size, batch=batch,
                                    classes=classes, iou_threshold=iou_threshold, cancelled=cancelled):
        if progress is not None and result.tiles_done:
            progress(result.tiles_done, result.tiles)
    return result


def detection_stop_rule(invalid_run: int = 2, sliding_run: int = 3) -> LineRule:
    """The stop rule for detection answers: the ways a small model loops instead of ending.

    The new line repeats an earlier one (:func:`earthgpt.answer_stream.repeats_a_line`); or it
    ends a run of ``invalid_run`` lines in a row without a usable box (``person [160, 160, 160,
    165]``, ``person [165, 165, 165, 170]``, …: an empty box sliding along the diagonal); or it is
    the ``sliding_run``-th box in a row that marches on from the one before (:func:`_marches`:
    ``person [166, 201, 191, 221]`` after ``person [166, 191, 191, 201]``, a box sliding down a
    column; ``car [300, 300, 320, 350]``, ``car [280, 300, 300, 350]``, ``car [260, 300, 280,
    350]``, …, a row of boxes of one height walking left). Each box line costs about 20 tokens,
    so such an answer ends after 60–80 tokens instead of the limit's 512. The refused line is left
    out; the lines before it are kept.

    How safe the marching test is, on the real MMRS build (``python -m earthgpt.eval.stop_audit
    --data mmrs``, docs/EVAL.md): it cuts none of the 4,224 reference detection answers of the
    train, val and test splits (38,022 box lines). It cuts 47 of nano v4's 100 val HBB answers and
    89 of its 100 OBB answers, saved under the rule before it.
    """

    def stop(lines: Sequence[str]) -> bool:
        if repeats_a_line(lines):
            return True
        recent = [parse_detections(line).detections for line in lines if line.strip()]
        if len(recent) >= invalid_run and not any(recent[-invalid_run:]):
            return True
        chain = recent[-sliding_run - 1 :]
        return len(chain) == sliding_run + 1 and all(len(found) == 1 for found in chain) and _marches(
            [found[0] for found in chain])

    return stop


def _marches(chain: Sequence[Detection]) -> bool:
    """True when the boxes of ``chain`` (one label) march: each moves on from the one before in
    one of two ways no annotator's list of four or more does (the reference answers above).

    - They share their extent across one axis exactly (the same top and bottom, or the same left
      and right) and their starts along the other axis move one way only: a row or a column of
      boxes of one height (width) walking along, with any gaps and widths (heights).
    - Each is the one before moved by the same non-zero step (diagonals included).

    Oriented boxes are compared by their enclosing horizontal boxes.
    """
    if len({det.label for det in chain}) != 1:
        return False
    boxes = np.array([_extent(det.box) for det in chain])  # (n, 4): x1, y1, x2, y2
    for across, along in (((1, 3), 0), ((0, 2), 1)):
        if (boxes[:, across] == boxes[0, across]).all():
            steps = np.diff(boxes[:, along])
            if (steps > 0).all() or (steps < 0).all():
                return True
    steps = np.diff(boxes, axis=0)
    return bool((steps == steps[0]).all() and steps[0].any())


def _extent(box: Box) -> tuple[float, float, float, float]:
    """``(x1, y1, x2, y2)`` of the horizontal box that encloses ``box``."""
    corners = np.asarray(box_corners(box), dtype=float)
    return (*corners.min(axis=0), *corners.max(axis=0))


def chat_answerer(
    new_chat: Callable[[], Any], prompt: str, max_new_tokens: int = 512, *,
    stop_rule: LineRule | None = None, cancelled: Callable[[], bool] | None = None,
) -> Callable[[list[np.ndarray]], list[str]]:
    """An ``answer`` function for :func:`detect_scene`: each tile is answered as a fresh chat asked
    one prompt.

    ``new_chat()`` returns an object with ``set_image(rgb)`` and ``ask(text, max_new_tokens=…,
    stream=True, stop_rule=…)``, such as ``earthgpt.inference.ChatSession``; a fresh one per tile
    keeps tiles independent. When it is a ``ChatSession`` (a chat with ``model`` and ``processor``)
    and a call brings several tiles (the ``batch`` of :func:`iter_detect_scene`), they are answered
    together in one token loop (:func:`earthgpt.batch_generate.answer_batch`: the same greedy
    answers up to float32 rounding in near ties, 2–3× the windows per second of nano on one CPU
    thread, BENCHMARKS.md); one tile, or another chat object, is asked as a chat. ``stop_rule``
    (e.g. :func:`detection_stop_rule`) ends an answer that repeats itself. When ``cancelled()``
    turns True the answers being written are cut there. Each text is an :class:`Answer`:
    ``hit_limit`` when the chat's ``finish_reason`` is ``length`` (or, for a chat without one, its
    ``answer_ids`` reached ``max_new_tokens``), ``stopped`` when it is ``rule``.
    """
    options = {"stop_rule": stop_rule} if stop_rule is not None else {}

    def one(chat: Any, image: np.ndarray) -> Answer:
        chat.set_image(image)
        pieces = chat.ask(prompt, max_new_tokens=max_new_tokens, stream=True, **options)
        text = ""
        for piece in pieces:
            text += piece
            if cancelled is not None and cancelled():
                close = getattr(pieces, "close", None)  # a ChatSession stream keeps what it wrote
                if close is not None:
                    close()
                break
        reason = getattr(chat, "finish_reason", None)
        if reason is None:
            produced = getattr(chat, "answer_ids", None)
            reason = "length" if produced is not None and len(produced) >= max_new_tokens else "end"
        return Answer(text, reason == "length", reason == "rule")

    def answer(images: list[np.ndarray]) -> list[str]:
        first = new_chat()
        if len(images) > 1 and _batchable(first):
            return _answer_together(first, images)
        chats = [first, *(new_chat() for _ in images[1:])]
        return [one(chat, image) for chat, image in zip(chats, images, strict=True)]

    def _answer_together(chat: Any, images: list[np.ndarray]) -> list[str]:
        from earthgpt.batch_generate import answer_batch

        answers = answer_batch(chat.model, chat.processor, images, [prompt] * len(images),
                               sensor=getattr(chat, "sensor", None), system=getattr(chat, "system", None),
                               max_new_tokens=max_new_tokens, stop_rule=stop_rule, cancelled=cancelled)
        return [Answer(a.text, a.finish_reason == "length", a.finish_reason == "rule") for a in answers]

    return answer


def _batchable(chat: Any) -> bool:
    """True for a chat that shows its model and processor, as :class:`earthgpt.inference.ChatSession`
    does: its model can answer a batch (a scripted chat cannot)."""
    return getattr(chat, "model", None) is not None and getattr(chat, "processor", None) is not None
