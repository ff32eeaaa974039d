"""Box geometry: horizontal (HBB) and oriented (OBB) boxes, the paper's corner order, grid
normalisation, IoU and (rotated) non-maximum suppression.

Every function here is agnostic of the coordinate space (pixels of some image, or the 0–1000
grid the model writes); the functions that convert say which space goes in and which comes out.
Image coordinates throughout: x to the right, y *down*.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import shapely

GRID = 1000
"""Boxes in model text live on an integer grid 0..GRID over the image the model sees."""

Point = tuple[float, float]


def _coord(value: object) -> float:
    """One coordinate: a finite real number; integers stay ``int`` so grid boxes stay exact."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"a coordinate must be a real number, got {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"a coordinate must be finite, got {value!r}")
    return number


@dataclass(frozen=True)
class HBB:
    """Axis-aligned box, *xyxy*: ``(x1, y1)`` top-left, ``(x2, y2)`` bottom-right, x1 <= x2, y1 <= y2."""

    x1: float
    y1: float
    x2: float
    y2: float

    def __post_init__(self) -> None:
        for name in ("x1", "y1", "x2", "y2"):
            object.__setattr__(self, name, _coord(getattr(self, name)))
        if self.x1 > self.x2 or self.y1 > self.y2:
            raise ValueError(
                f"HBB expects x1 <= x2 and y1 <= y2 (xyxy), got ({self.x1}, {self.y1}, {self.x2}, {self.y2})"
            )

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> Point:
        return ((self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2)

    def as_list(self) -> list[float]:
        """``[x1, y1, x2, y2]``."""
        return [self.x1, self.y1, self.x2, self.y2]

    def corners(self) -> tuple[Point, Point, Point, Point]:
        """The four corners in the paper's order (top-left first, then clockwise on screen)."""
        return ((self.x1, self.y1), (self.x2, self.y1), (self.x2, self.y2), (self.x1, self.y2))

    def to_obb(self) -> OBB:
        """The same rectangle as an oriented box."""
        return OBB(self.corners())


def order_corners(points: Iterable[Sequence[float]]) -> tuple[Point, Point, Point, Point]:
    """Put four corners in the paper's order.

    The first corner is the one closest to the origin ``(0, 0)`` (Euclidean distance; ties go to
    the smaller y, then the smaller x). The other three follow in ascending angle around the
    centre (the mean of the four corners), the angle of a point being ``atan2(y - cy, x - cx)``
    in image coordinates (y down) and measured from the first corner's angle, so the order runs
    clockwise as seen on screen. Points at the same angle (degenerate boxes) go by smaller y, then
    smaller x. The result depends only on the set of points: it is idempotent and invariant to any
    permutation of the input.
    """
    pts = [_point(p) for p in points]
    if len(pts) != 4:
        raise ValueError(f"an oriented box needs exactly 4 corners, got {len(pts)}")
    pts.sort(key=lambda p: (p[1], p[0]))  # a fixed summation order keeps the centre permutation-free
    cx = sum(p[0] for p in pts) / 4
    cy = sum(p[1] for p in pts) / 4
    first = min(pts, key=lambda p: (p[0] * p[0] + p[1] * p[1], p[1], p[0]))
    rest = list(pts)
    rest.remove(first)
    start = math.atan2(first[1] - cy, first[0] - cx)

    def turn(p: Point) -> tuple[float, float, float]:
        return ((math.atan2(p[1] - cy, p[0] - cx) - start) % math.tau, p[1], p[0])

    rest.sort(key=turn)
    return (first, rest[0], rest[1], rest[2])


def _point(point: Sequence[float]) -> Point:
    pair = tuple(point)
    if len(pair) != 2:
        raise ValueError(f"a corner is an (x, y) pair, got {pair!r}")
    return (_coord(pair[0]), _coord(pair[1]))


@dataclass(frozen=True)
class OBB:
    """Oriented box as four ``(x, y)`` corners, always stored in the paper's order (see
    :func:`order_corners`); any order given to the constructor is normalised."""

    corners: tuple[Point, Point, Point, Point]

    def __post_init__(self) -> None:
        object.__setattr__(self, "corners", order_corners(self.corners))

    @property
    def center(self) -> Point:
        return (sum(p[0] for p in self.corners) / 4, sum(p[1] for p in self.corners) / 4)

    @property
    def angle_deg(self) -> float:
        """Direction of the first edge (corner 1 → corner 2) in degrees, ``atan2(dy, dx)`` in image
        coordinates: 0 points right, positive turns clockwise on screen; range (-180, 180]."""
        (x0, y0), (x1, y1) = self.corners[0], self.corners[1]
        return math.degrees(math.atan2(y1 - y0, x1 - x0))

    @property
    def area(self) -> float:
        return float(self.polygon().area)

    def as_list(self) -> list[float]:
        """``[x1, y1, x2, y2, x3, y3, x4, y4]`` in the paper's order."""
        return [c for point in self.corners for c in point]

    def to_hbb(self) -> HBB:
        """The smallest axis-aligned box enclosing the corners."""
        xs = [p[0] for p in self.corners]
        ys = [p[1] for p in self.corners]
        return HBB(min(xs), min(ys), max(xs), max(ys))

    def polygon(self) -> shapely.Polygon:
        """The box as a shapely polygon (same coordinate space)."""
        return shapely.Polygon(self.corners)


Box = HBB | OBB


@dataclass(frozen=True)
class Detection:
    """One object: its class name, its box (space named by whoever holds it) and, from detectors
    that have one, a confidence score."""

    label: str
    box: Box
    score: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.label, str):
            raise ValueError(f"Detection.label must be a str, got {type(self.label).__name__}")
        if not isinstance(self.box, HBB | OBB):
            raise ValueError(f"Detection.box must be an HBB or OBB, got {type(self.box).__name__}")
        if self.score is not None and not math.isfinite(float(self.score)):
            raise ValueError(f"Detection.score must be finite or None, got {self.score!r}")


def obb_from_corners(points: Iterable[Sequence[float]]) -> OBB:
    """An OBB from four ``(x, y)`` corners in any order."""
    return OBB(tuple(tuple(p) for p in points))  # type: ignore[arg-type]


def obb_from_polygon8(values: Sequence[float]) -> OBB:
    """An OBB from eight numbers ``x1 y1 x2 y2 x3 y3 x4 y4`` (the DOTA label layout), any corner order."""
    values = list(values)
    if len(values) != 8:
        raise ValueError(f"a DOTA polygon has 8 numbers, got {len(values)}")
    return obb_from_corners(zip(values[0::2], values[1::2], strict=True))


def obb_from_cxcywha(cx: float, cy: float, w: float, h: float, angle_deg: float) -> OBB:
    """An OBB from centre, size and angle.

    The box of width ``w`` (along x) and height ``h`` (along y) centred on ``(cx, cy)`` is turned
    by ``angle_deg`` degrees about its centre with the standard rotation matrix applied in image
    coordinates (y down), so a positive angle turns the box **clockwise as seen on screen**.
    """
    w, h, angle = _coord(w), _coord(h), _coord(angle_deg)
    if w < 0 or h < 0:
        raise ValueError(f"width and height must be >= 0, got w={w}, h={h}")
    rad = math.radians(angle)
    cos, sin = math.cos(rad), math.sin(rad)
    half = ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))
    return obb_from_corners((cx + dx * cos - dy * sin, cy + dx * sin + dy * cos) for dx, dy in half)


def obb_to_cxcywha(obb: OBB) -> tuple[float, float, float, float, float]:
    """``(cx, cy, w, h, angle_deg)`` of a rectangular OBB, the inverse of :func:`obb_from_cxcywha`:
    ``w`` is the length of the first edge, ``h`` of the second, and the angle is the first edge's
    direction (clockwise positive on screen) normalised to [-90, 90)."""
    (x0, y0), (x1, y1), (x2, y2), _ = obb.corners
    cx, cy = obb.center
    angle = (obb.angle_deg + 90.0) % 180.0 - 90.0
    return (cx, cy, math.hypot(x1 - x0, y1 - y0), math.hypot(x2 - x1, y2 - y1), angle)


def _check_size(width: float, height: float) -> tuple[float, float]:
    if not (isinstance(width, numbers.Real) and isinstance(height, numbers.Real)):
        raise ValueError(f"image size must be numbers, got width={width!r}, height={height!r}")
    if not (math.isfinite(width) and math.isfinite(height)) or width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got width={width}, height={height}")
    return float(width), float(height)


def _to_grid(value: float, size: float) -> int:
    return min(GRID, max(0, round(GRID * value / size)))


def pixel_to_grid(box: Box, width: float, height: float) -> Box:
    """A box in pixels of an image ``width`` × ``height`` → the same box on the integer 0–1000
    grid: ``round(1000 · x / width)``, clamped to 0..1000 (OBB corners clamped one by one)."""
    width, height = _check_size(width, height)
    if isinstance(box, HBB):
        return HBB(
            _to_grid(box.x1, width),
            _to_grid(box.y1, height),
            _to_grid(box.x2, width),
            _to_grid(box.y2, height),
        )
    if isinstance(box, OBB):
        return obb_from_corners((_to_grid(x, width), _to_grid(y, height)) for x, y in box.corners)
    raise ValueError(f"expected an HBB or OBB, got {type(box).__name__}")


def grid_to_pixel(box: Box, width: float, height: float) -> Box:
    """A box on the 0–1000 grid → the same box in pixels (floats) of an image ``width`` × ``height``."""
    width, height = _check_size(width, height)
    sx, sy = width / GRID, height / GRID
    if isinstance(box, HBB):
        return HBB(box.x1 * sx, box.y1 * sy, box.x2 * sx, box.y2 * sy)
    if isinstance(box, OBB):
        return obb_from_corners((x * sx, y * sy) for x, y in box.corners)
    raise ValueError(f"expected an HBB or OBB, got {type(box).__name__}")


def box_corners(box: Box) -> tuple[Point, Point, Point, Point]:
    """The four corners of a box in its own order (HBB: top-left, top-right, bottom-right,
    bottom-left, clockwise on screen; OBB: the paper's order), in the box's space."""
    if isinstance(box, HBB):
        return box.corners()
    if isinstance(box, OBB):
        return box.corners
    raise ValueError(f"expected an HBB or OBB, got {type(box).__name__}")


def _polygons(boxes: Sequence[Box]) -> np.ndarray:
    """Shapely polygons of the boxes; a self-crossing quadrilateral is replaced by its hull."""
    if not boxes:
        return np.empty(0, dtype=object)
    polys = shapely.polygons(np.array([box_corners(b) for b in boxes], dtype=float))
    bad = ~shapely.is_valid(polys)
    if bad.any():
        polys[bad] = shapely.convex_hull(polys[bad])
    return polys


def _hbb_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between every row of ``a`` (n, 4) and of ``b`` (m, 4), both xyxy."""
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return _ratio(inter, area_a[:, None] + area_b[None, :] - inter)


def _ratio(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return np.clip(out, 0.0, 1.0)


def _poly_iou(pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
    """IoU between every polygon of ``pa`` and of ``pb`` (shapely, vectorised)."""
    inter = shapely.area(shapely.intersection(pa[:, None], pb[None, :]))
    union = shapely.area(pa)[:, None] + shapely.area(pb)[None, :] - inter
    return _ratio(inter, union)


def iou_matrix(boxes_a: Sequence[Box], boxes_b: Sequence[Box]) -> np.ndarray:
    """IoU of every box of ``boxes_a`` with every box of ``boxes_b`` (same space), shape (n, m).

    All-HBB inputs use exact box arithmetic; anything with an OBB goes through shapely polygons.
    Degenerate (zero-area) pairs give 0.
    """
    boxes_a, boxes_b = list(boxes_a), list(boxes_b)
    if not boxes_a or not boxes_b:
        return np.zeros((len(boxes_a), len(boxes_b)))
    if all(isinstance(b, HBB) for b in boxes_a + boxes_b):
        return _hbb_iou(_xyxy(boxes_a), _xyxy(boxes_b))
    return _poly_iou(_polygons(boxes_a), _polygons(boxes_b))


def _xyxy(boxes: Sequence[Box]) -> np.ndarray:
    """Enclosing xyxy of each box, shape (n, 4)."""
    rows = [b.as_list() if isinstance(b, HBB) else b.to_hbb().as_list() for b in boxes]
    return np.array(rows, dtype=float).reshape(-1, 4)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes in the same space, in [0, 1]; 0 when degenerate."""
    if a == b:
        return 1.0 if _area(a) > 0 else 0.0
    return float(iou_matrix([a], [b])[0, 0])


def _area(box: Box) -> float:
    return box.area if isinstance(box, HBB) else float(_polygons([box])[0].area)


def nms(boxes: Sequence[Box], scores: Sequence[float], iou_threshold: float = 0.5) -> list[int]:
    """Greedy non-maximum suppression for HBBs, OBBs or a mix (polygon IoU).

    Boxes are visited by descending score (ties keep input order); a box is dropped when its IoU
    with an already kept box is greater than ``iou_threshold``. Returns the kept indices in
    visiting order.
    """
    boxes = list(boxes)
    scores = [float(s) for s in scores]
    if len(scores) != len(boxes):
        raise ValueError(f"nms needs one score per box, got {len(boxes)} boxes and {len(scores)} scores")
    if not all(math.isfinite(s) for s in scores):
        raise ValueError("nms scores must be finite")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    order = np.array(sorted(range(len(boxes)), key=lambda i: -scores[i]), dtype=int)
    bounds = _xyxy(boxes)
    polys = None if all(isinstance(b, HBB) for b in boxes) else _polygons(boxes)
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep: list[int] = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(int(i))
        rest = order[pos + 1 :][~suppressed[order[pos + 1 :]]]
        if rest.size == 0:
            continue
        if polys is None:
            overlaps = _hbb_iou(bounds[i : i + 1], bounds[rest])[0]
        else:
            near = rest[_touching(bounds[i], bounds[rest])]
            overlaps = np.zeros(rest.size)
            if near.size:
                overlaps[np.isin(rest, near)] = _poly_iou(polys[i : i + 1], polys[near])[0]
        suppressed[rest[overlaps > iou_threshold]] = True
    return keep


def _touching(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Which enclosing boxes of ``others`` overlap ``box`` (a cheap filter before polygon IoU)."""
    return (
        (others[:, 0] <= box[2])
        & (others[:, 2] >= box[0])
        & (others[:, 1] <= box[3])
        & (others[:, 3] >= box[1])
    )


def nms_detections(
    detections: Sequence[Detection], iou_threshold: float = 0.5, per_class: bool = True
) -> list[Detection]:
    """NMS over detections, by class when ``per_class`` (boxes of different classes never suppress
    each other). A missing score counts as 1.0, so unscored model output keeps its own order.
    Returns the kept detections by descending score (ties in input order)."""
    detections = list(detections)
    scores = [1.0 if d.score is None else float(d.score) for d in detections]
    groups: dict[str, list[int]] = {}
    for index, det in enumerate(detections):
        groups.setdefault(det.label if per_class else "", []).append(index)
    kept: list[int] = []
    for members in groups.values():
        picked = nms([detections[i].box for i in members], [scores[i] for i in members], iou_threshold)
        kept.extend(members[k] for k in picked)
    kept.sort(key=lambda i: (-scores[i], i))
    return [detections[i] for i in kept]


def translate_box(box: Box, dx: float, dy: float) -> Box:
    """Shift a box by ``(dx, dy)`` in its own space; OBB corners are re-ordered by the paper's rule."""
    if isinstance(box, HBB):
        return HBB(box.x1 + dx, box.y1 + dy, box.x2 + dx, box.y2 + dy)
    return obb_from_corners([(x + dx, y + dy) for x, y in box.corners])


def box_kind(box: Box) -> str:
    """``"hbb"`` or ``"obb"``."""
    return "obb" if isinstance(box, OBB) else "hbb"


def box_angle(box: Box) -> float:
    """An OBB's angle in degrees as :func:`obb_to_cxcywha` gives it (3 decimals); 0 for an HBB."""
    return 0.0 if isinstance(box, HBB) else round(obb_to_cxcywha(box)[4], 3)
