"""Box geometry: corner order, conversions, grid normalisation, IoU and NMS."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from earthgpt.geometry import (
    GRID,
    HBB,
    OBB,
    Detection,
    grid_to_pixel,
    iou,
    iou_matrix,
    nms,
    nms_detections,
    obb_from_corners,
    obb_from_cxcywha,
    obb_from_polygon8,
    obb_to_cxcywha,
    order_corners,
    pixel_to_grid,
)

# --- hand examples ---------------------------------------------------------------------------


def test_dota_polygon_is_put_in_paper_order():
    # A DOTA label line lists corners from wherever the annotator started; here bottom-right first.
    obb = obb_from_polygon8([870, 560, 790, 600, 740, 500, 820, 460])
    # Closest to the origin is (740, 500); then clockwise on screen around the centre (805, 530).
    assert obb.corners == ((740, 500), (820, 460), (870, 560), (790, 600))
    assert obb.as_list() == [740, 500, 820, 460, 870, 560, 790, 600]


def test_axis_aligned_box_starts_top_left_and_runs_clockwise():
    assert HBB(10, 20, 50, 40).to_obb().corners == ((10, 20), (50, 20), (50, 40), (10, 40))


def test_square_tie_break_is_deterministic():
    # A diamond whose top and left corners are equally far from the origin: the smaller y wins.
    diamond = [(5, 0), (10, 5), (5, 10), (0, 5)]
    assert order_corners(diamond)[0] == (5, 0)
    assert order_corners(reversed(diamond)) == order_corners(diamond)


def test_box_rotated_30_degrees():
    obb = obb_from_cxcywha(100, 100, 40, 20, 30)
    cos, sin = math.cos(math.radians(30)), math.sin(math.radians(30))
    # The top-left corner of the unrotated box, turned clockwise on screen by 30 degrees.
    expected_first = (100 + (-20) * cos - (-10) * sin, 100 + (-20) * sin + (-10) * cos)
    assert obb.corners[0] == pytest.approx(expected_first)
    assert obb.angle_deg == pytest.approx(30)
    assert obb.area == pytest.approx(800)
    cx, cy, w, h, angle = obb_to_cxcywha(obb)
    assert (cx, cy, w, h, angle) == pytest.approx((100, 100, 40, 20, 30))
    hbb = obb.to_hbb()
    assert hbb.width == pytest.approx(40 * cos + 20 * sin)
    assert hbb.height == pytest.approx(40 * sin + 20 * cos)


def test_cxcywha_angle_is_normalised():
    # 120 degrees and -60 degrees describe the same rectangle.
    a = obb_from_cxcywha(0, 0, 30, 10, 120)
    assert obb_to_cxcywha(a)[4] == pytest.approx(-60)
    assert iou(a, obb_from_cxcywha(0, 0, 30, 10, -60)) == pytest.approx(1.0)


def test_invalid_boxes_are_rejected_with_clear_messages():
    with pytest.raises(ValueError, match="x1 <= x2"):
        HBB(10, 0, 5, 5)
    with pytest.raises(ValueError, match="exactly 4 corners"):
        obb_from_corners([(0, 0), (1, 0), (1, 1)])
    with pytest.raises(ValueError, match="finite"):
        HBB(0, 0, float("nan"), 1)
    with pytest.raises(ValueError, match="8 numbers"):
        obb_from_polygon8([1, 2, 3])
    with pytest.raises(ValueError, match="positive"):
        pixel_to_grid(HBB(0, 0, 1, 1), 0, 10)


def test_pixel_grid_conversion():
    assert pixel_to_grid(HBB(0, 0, 512, 256), 1024, 512) == HBB(0, 0, 500, 500)
    assert pixel_to_grid(HBB(-5, 0, 2000, 10), 1000, 1000) == HBB(0, 0, 1000, 10)
    assert grid_to_pixel(HBB(0, 0, 500, 500), 1024, 512) == HBB(0, 0, 512.0, 256.0)
    grid = pixel_to_grid(obb_from_cxcywha(100, 50, 40, 20, 30), 200, 100)
    assert isinstance(grid, OBB) and all(isinstance(c, int) for c in grid.as_list())


def test_iou_hand_values():
    assert iou(HBB(0, 0, 10, 10), HBB(5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert iou(HBB(0, 0, 10, 10), HBB(20, 20, 30, 30)) == 0.0
    assert iou(HBB(0, 0, 0, 10), HBB(0, 0, 0, 10)) == 0.0  # degenerate
    # A square and the same square turned 45 degrees: intersection is the regular octagon.
    square = obb_from_cxcywha(0, 0, 2, 2, 0)
    turned = obb_from_cxcywha(0, 0, 2, 2, 45)
    octagon = 8 * (math.sqrt(2) - 1)
    assert iou(square, turned) == pytest.approx(octagon / (8 - octagon))


def test_iou_matrix_shapes_and_values():
    a = [HBB(0, 0, 10, 10), obb_from_cxcywha(5, 5, 10, 10, 0)]
    b = [HBB(5, 0, 15, 10)]
    m = iou_matrix(a, b)
    assert m.shape == (2, 1)
    assert m[:, 0] == pytest.approx([1 / 3, 1 / 3])
    assert iou_matrix([], b).shape == (0, 1)


def test_nms_keeps_best_and_drops_overlaps():
    boxes = [HBB(0, 0, 10, 10), HBB(1, 0, 11, 10), HBB(50, 50, 60, 60), HBB(0, 0, 10, 10)]
    assert nms(boxes, [0.5, 0.9, 0.3, 0.5]) == [1, 2]
    rotated = [obb_from_cxcywha(50, 50, 40, 10, a) for a in (0, 5, 90)]
    assert nms(rotated, [0.9, 0.8, 0.7], iou_threshold=0.5) == [0, 2]
    assert nms([], []) == []
    with pytest.raises(ValueError, match="one score per box"):
        nms(boxes, [1.0])


def test_nms_detections_is_class_aware():
    dets = [
        Detection("ship", HBB(0, 0, 10, 10), 0.9),
        Detection("harbor", HBB(0, 0, 10, 10), 0.8),
        Detection("ship", HBB(1, 0, 11, 10), 0.7),
    ]
    assert [d.label for d in nms_detections(dets)] == ["ship", "harbor"]
    assert [d.label for d in nms_detections(dets, per_class=False)] == ["ship"]


# --- properties ------------------------------------------------------------------------------

coord = st.integers(min_value=0, max_value=GRID)


@st.composite
def hbbs(draw, min_size: int = 0) -> HBB:
    x1 = draw(st.integers(0, GRID - min_size))
    y1 = draw(st.integers(0, GRID - min_size))
    x2 = draw(st.integers(x1 + min_size, GRID))
    y2 = draw(st.integers(y1 + min_size, GRID))
    return HBB(x1, y1, x2, y2)


@st.composite
def rotated(draw) -> OBB:
    return obb_from_cxcywha(
        draw(st.floats(100, 900)),
        draw(st.floats(100, 900)),
        draw(st.floats(5, 200)),
        draw(st.floats(5, 200)),
        draw(st.floats(-180, 180)),
    )


boxes = st.one_of(hbbs(), rotated())


@settings(max_examples=60, deadline=None)
@given(rotated(), st.permutations(range(4)))
def test_order_corners_is_idempotent_and_permutation_invariant(obb, perm):
    corners = obb.corners
    assert order_corners(corners) == corners
    assert order_corners([corners[i] for i in perm]) == corners
    for shift in range(4):
        assert order_corners(corners[shift:] + corners[:shift]) == corners


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(coord, coord), min_size=4, max_size=4))
def test_order_corners_on_arbitrary_integer_points(points):
    ordered = order_corners(points)
    assert sorted(ordered) == sorted(points)
    assert order_corners(ordered) == ordered
    for perm in itertools.permutations(points):
        assert order_corners(perm) == ordered


@settings(max_examples=60, deadline=None)
@given(boxes, boxes)
def test_iou_symmetric_and_bounded(a, b):
    ab, ba = iou(a, b), iou(b, a)
    assert 0.0 <= ab <= 1.0
    assert ab == pytest.approx(ba, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.one_of(hbbs(min_size=1), rotated()))
def test_iou_with_itself_is_one(box):
    assert iou(box, box) == 1.0


@settings(max_examples=60, deadline=None)
@given(hbbs(min_size=1), hbbs())
def test_hbb_iou_equals_polygon_iou_of_the_same_boxes(a, b):
    assert iou(a, b) == pytest.approx(iou(a.to_obb(), b.to_obb()), abs=1e-9)
    assert iou(a, b.to_obb()) == pytest.approx(iou(a, b), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(boxes, min_size=1, max_size=12),
    st.data(),
    st.floats(0.1, 0.9),
)
def test_nms_is_idempotent(box_list, data, threshold):
    scores = data.draw(st.lists(st.floats(0, 1), min_size=len(box_list), max_size=len(box_list)))
    kept = nms(box_list, scores, threshold)
    assert kept and len(set(kept)) == len(kept)
    assert [scores[i] for i in kept] == sorted((scores[i] for i in kept), reverse=True)
    again = nms([box_list[i] for i in kept], [scores[i] for i in kept], threshold)
    assert again == list(range(len(kept)))
    m = iou_matrix([box_list[i] for i in kept], [box_list[i] for i in kept])
    assert np.all(m[~np.eye(len(kept), dtype=bool)] <= threshold + 1e-12)


@settings(max_examples=60, deadline=None)
@given(
    st.floats(1, 5000),
    st.floats(1, 5000),
    st.floats(0, 1),
    st.floats(0, 1),
    st.floats(0, 1),
    st.floats(0, 1),
)
def test_pixel_grid_pixel_within_half_a_cell(width, height, fx1, fy1, fx2, fy2):
    x1, x2 = sorted((fx1 * width, fx2 * width))
    y1, y2 = sorted((fy1 * height, fy2 * height))
    box = HBB(x1, y1, x2, y2)
    grid = pixel_to_grid(box, width, height)
    assert all(isinstance(v, int) and 0 <= v <= GRID for v in grid.as_list())
    back = grid_to_pixel(grid, width, height)
    cell = (width / GRID, height / GRID, width / GRID, height / GRID)
    for original, restored, size in zip(box.as_list(), back.as_list(), cell, strict=True):
        assert abs(original - restored) <= size / 2 + 1e-9


@settings(max_examples=40, deadline=None)
@given(rotated())
def test_cxcywha_round_trip(obb):
    again = obb_from_cxcywha(*obb_to_cxcywha(obb))
    assert np.allclose(again.as_list(), obb.as_list(), atol=1e-6)
    assert -90 <= obb_to_cxcywha(obb)[4] < 90
