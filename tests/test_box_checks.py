"""The one check of a box: degenerate, swapped corners, off the image."""

from __future__ import annotations

import pytest

from earthgpt.box_checks import box_problem, order_problem
from earthgpt.geometry import HBB, obb_from_corners, obb_from_cxcywha


@pytest.mark.parametrize(("box", "reason"), [
    (HBB(161, 161, 161, 161), "zero area"),
    (HBB(10, 20, 10, 40), "zero width"),
    (HBB(10, 20, 30, 20), "zero height"),
    (obb_from_corners([(0, 0), (10, 10), (20, 20), (30, 30)]), "zero area"),
    (obb_from_corners([(5, 5)] * 4), "zero area"),
    (HBB(1000, 10, 1200, 50), "off the image"),  # touching the edge from outside is still outside
    (HBB(-50, -50, 0, 0), "off the image"),
    (obb_from_cxcywha(-100, 500, 40, 20, 30), "off the image"),
])
def test_unusable_boxes_say_why(box, reason):
    assert box_problem(box) == reason


@pytest.mark.parametrize("box", [
    HBB(0, 0, 1000, 1000),
    HBB(990, 10, 1010, 50),  # partly outside: drawing and exports clip it
    obb_from_cxcywha(500, 500, 40, 20, 30),
    obb_from_corners([(0, 0), (10, 0), (10, 0.001), (0, 0.001)]),  # thin but not flat
])
def test_usable_boxes_pass(box):
    assert box_problem(box) is None


def test_the_image_size_is_the_box_space():
    box = HBB(1500, 100, 1600, 200)  # full-raster pixels of a 4000 × 3000 raster
    assert box_problem(box) == "off the image"  # on the default 0–1000 grid
    assert box_problem(box, (4000, 3000)) is None
    assert box_problem(HBB(4000, 0, 4100, 10), (4000, 3000)) == "off the image"
    assert box_problem(HBB(-5e6, 1e6, -4e6, 2e6), None) is None  # map coordinates: no bounds
    assert box_problem(HBB(0, 0, 0, 1), None) == "zero width"


def test_order_problem_names_the_swapped_axis():
    assert order_problem(300, 20, 100, 40) == "x1 > x2"
    assert order_problem(10, 50, 30, 20) == "y1 > y2"
    assert order_problem(10, 20, 10, 20) is None
    with pytest.raises(ValueError, match="HBB or OBB"):
        box_problem([1, 2, 3, 4])  # type: ignore[arg-type]
