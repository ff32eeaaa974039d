"""Box text: the canonical grammar (format ↔ parse) and the other models' dialects."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from earthgpt.box_checks import box_problem
from earthgpt.box_dialects import DIALECTS, parse_dialect
from earthgpt.geometry import GRID, HBB, OBB, Detection, iou, obb_from_corners, obb_from_cxcywha
from earthgpt.textbox import (
    InvalidBox,
    ParseResult,
    format_box,
    format_detections,
    format_grounding,
    parse_box,
    parse_detections,
    read_box,
)

# --- canonical grammar, hand examples ---------------------------------------------------------


def test_format_box_and_detections():
    assert format_box(HBB(1, 2, 300, 400)) == "[1, 2, 300, 400]"
    obb = obb_from_corners([(30, 40), (10, 20), (30, 20), (10, 40)])
    assert format_box(obb) == "[10, 20, 30, 20, 30, 40, 10, 40]"
    assert format_grounding(HBB(0, 0, 1000, 1000)) == "[0, 0, 1000, 1000]"
    text = format_detections([Detection("storage tank", HBB(1, 2, 3, 4)), Detection(" ship ", obb)])
    assert text == "storage tank [1, 2, 3, 4]\nship [10, 20, 30, 20, 30, 40, 10, 40]"


def test_format_rejects_what_is_not_a_grid_box_or_a_class_name():
    with pytest.raises(ValueError, match="grid coordinate"):
        format_box(HBB(0, 0, 1920, 1080))
    with pytest.raises(ValueError, match="class name"):
        format_detections([Detection("ship [big]", HBB(0, 0, 1, 1))])
    with pytest.raises(ValueError, match="class name"):
        format_detections([Detection("  ", HBB(0, 0, 1, 1))])


def test_parse_detections_tolerates_model_mistakes():
    text = (
        "Here are the objects:\n"
        "ground track field [10, 20, 30, 40] and some trailing words\n"
        "\n"
        "large-vehicle [50,60 ,  70 80]\n"
        "ship [30.6, -5, 1200, 40]\n"  # partly out of range → clamped, decimals rounded
        "plane [1, 2, x, 4]\n"
        "plane [1, 2, 3]\n"
        "harbor [1, 2, 3, 4, 5, 6"  # truncated by the token limit
    )
    result = parse_detections(text)
    assert [(d.label, d.box) for d in result.detections] == [
        ("ground track field", HBB(10, 20, 30, 40)),
        ("large-vehicle", HBB(50, 60, 70, 80)),
        ("ship", HBB(31, 0, 1000, 40)),
    ]
    assert result.raw_lines == 7 and result.skipped == 4


def test_parse_edge_cases():
    assert parse_detections("") == ParseResult([], 0, 0)
    assert parse_detections("[1, 2, 3, 4]").detections == [Detection("", HBB(1, 2, 3, 4))]
    assert parse_box("The airport is at [100, 200, 300, 400].") == HBB(100, 200, 300, 400)
    assert parse_box("[a] then [6, 5, 8, 7]") == HBB(6, 5, 8, 7)
    assert isinstance(parse_box("[0, 0, 10, 0, 10, 10, 0, 10]"), OBB)
    assert parse_box("no box") is None and read_box("no box") is None


def test_unusable_boxes_are_reported_not_detected():
    text = (
        "car [161, 161, 161, 161]\n"  # what the default model repeats
        "ship [10, 20, 30, 40]\n"
        "car [300, 20, 100, 40]\n"
        "car [10, 50, 30, 20]\n"
        "tank [1100, 50, 1200, 90]\n"  # wholly off the grid: clamping would squash it onto the edge
        "road [0, 0, 10, 0, 20, 0, 30, 0]\n"  # collinear corners
        "pier [5, 40, 5.2, 90]\n"  # zero width once rounded to the grid
        "harbor [1, 2"
    )
    result = parse_detections(text)
    assert result.detections == [Detection("ship", HBB(10, 20, 30, 40))]
    assert [(b.index, b.label, b.text, b.reason) for b in result.invalid] == [
        (0, "car", "[161, 161, 161, 161]", "zero area"),
        (2, "car", "[300, 20, 100, 40]", "x1 > x2"),
        (3, "car", "[10, 50, 30, 20]", "y1 > y2"),
        (4, "tank", "[1100, 50, 1200, 90]", "off the image"),
        (5, "road", "[0, 0, 10, 0, 20, 0, 30, 0]", "zero area"),
        (6, "pier", "[5, 40, 5.2, 90]", "zero width"),
    ]
    assert result.skipped == 1 and result.raw_lines == 8
    kinds = [type(item).__name__ for item in result.written()]
    assert kinds == ["InvalidBox", "Detection"] + ["InvalidBox"] * 5
    assert result.invalid[1].box == HBB(100, 20, 300, 40)  # as the lenient reading gave it, for eval
    found = read_box("The region [500, 500, 100, 100] holds a car.")
    assert isinstance(found, InvalidBox) and found.reason == "x1 > x2"
    assert parse_box("[500, 500, 100, 100]") is None


def test_dialects_report_unusable_boxes():
    geochat = parse_dialect("<p>car</p> {<10><20><10><40>|<0>}{<1><2><3><4>}", "geochat")
    assert [b.reason for b in geochat.invalid] == ["zero width"] and len(geochat.detections) == 1
    falcon = parse_dialect("car<box><5><5><5><5></box>", "falcon")
    assert falcon.invalid[0].reason == "zero area" and falcon.raw_lines == 1 and falcon.skipped == 0
    earthdial = parse_dialect("[[30, 10, 20, 40]][[1, 2, 3, 4]]", "earthdial")
    assert earthdial.invalid[0].reason == "x1 > x2" and earthdial.invalid[0].index == 0
    qwen = parse_dialect('[{"bbox_2d": [300, 10, 400, 20], "label": "car"}]', "qwen", width=200, height=400)
    assert qwen.invalid[0].reason == "off the image" and qwen.invalid[0].text == "[300, 10, 400, 20]"


# --- canonical grammar, properties ------------------------------------------------------------

coord = st.integers(min_value=0, max_value=GRID)
labels = (
    st.text(alphabet=string.ascii_letters + string.digits + " -_'/()", min_size=1, max_size=30)
    .map(str.strip)
    .filter(bool)
)


@st.composite
def grid_boxes(draw):
    if draw(st.booleans()):
        x1, x2 = sorted((draw(coord), draw(coord)))
        y1, y2 = sorted((draw(coord), draw(coord)))
        return HBB(x1, y1, x2, y2)
    return obb_from_corners([(draw(coord), draw(coord)) for _ in range(4)])


usable_boxes = grid_boxes().filter(lambda box: box_problem(box) is None)


@settings(max_examples=100, deadline=None)
@given(usable_boxes)
def test_parse_box_inverts_format_box(box):
    assert parse_box(format_box(box)) == box


@settings(max_examples=100, deadline=None)
@given(grid_boxes())
def test_every_box_read_is_usable_or_reported(box):
    found = read_box(format_box(box))
    if box_problem(box) is None:
        assert found == box
    else:
        assert isinstance(found, InvalidBox) and found.reason == box_problem(box) and found.box == box


@settings(max_examples=60, deadline=None)
@given(st.lists(st.builds(Detection, labels, usable_boxes), max_size=8))
def test_parse_detections_inverts_format_detections(detections):
    result = parse_detections(format_detections(detections))
    assert result.detections == detections
    assert result.skipped == 0 and result.raw_lines == len(detections)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_parsers_never_raise_on_arbitrary_text(text):
    result = parse_detections(text)
    assert result.skipped + len(result.detections) + len(result.invalid) == result.raw_lines
    parse_box(text)
    for name in DIALECTS:
        parsed = parse_dialect(text, name, width=640, height=480)
        assert all(0 <= v <= GRID for d in parsed.detections for v in d.box.as_list())
        assert all(box_problem(d.box) is None for d in parsed.detections)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="[]{}<>|,.-0123456789 \nabpqoxrefjsnu_\"':/`", max_size=200))
def test_parsers_never_raise_on_box_like_junk(text):
    parse_detections(text)
    for name in DIALECTS:
        parse_dialect(text, name, width=100, height=100)


# --- other dialects ---------------------------------------------------------------------------


def test_geochat_boxes_on_a_0_100_grid_with_angle():
    text = "<p>ships</p> {<10><20><30><40>|<0>}{<50><50><70><60>|<30>} harbor {<1><2><3><4>|90}"
    result = parse_dialect(text, "geochat")
    assert [d.label for d in result.detections] == ["ships", "ships", "harbor"]
    assert result.detections[0].box == HBB(100, 200, 300, 400)
    # 30 degrees counter-clockwise on screen = -30 in our clockwise-positive convention.
    rotated = result.detections[1].box
    assert isinstance(rotated, OBB)
    assert iou(rotated, obb_from_cxcywha(600, 550, 200, 100, -30)) > 0.98
    assert iou(rotated, obb_from_cxcywha(600, 550, 200, 100, 30)) < 0.7
    # A 20 x 20 square turned by 90 degrees is the same square.
    assert iou(result.detections[2].box, HBB(10, 20, 30, 40)) == pytest.approx(1.0)
    assert result.skipped == 0


def test_geochat_truncated_box_is_counted():
    result = parse_dialect("{<1><2><3><4>|<0>}{<5><6><7>", "geochat")
    assert len(result.detections) == 1 and result.skipped == 1 and result.raw_lines == 2


def test_falcon_box_and_quad_tags():
    text = "ship<box><100><200><300><400></box> plane<quad><1><2><30><2><30><40><1><40></quad><box><1><2>"
    result = parse_dialect(text, "falcon")
    assert [(d.label, d.box) for d in result.detections] == [
        ("ship", HBB(100, 200, 300, 400)),
        ("plane", obb_from_corners([(1, 2), (30, 2), (30, 40), (1, 40)])),
    ]
    assert result.skipped == 1
    assert parse_dialect("<box>[12, 34, 56, 78]</box>", "falcon").detections[0].box == HBB(12, 34, 56, 78)
    bare = parse_dialect("<loc_5><loc_6><loc_7><loc_8>", "falcon")
    assert bare.detections[0].box == HBB(5, 6, 7, 8)


def test_earthdial_lists_with_angle_on_a_0_100_grid():
    # As in EarthDial's own result files, including a list cut off by the token limit.
    text = "[[19, 19, 23, 23, 0]][[14, 15, 18, 25, 90]][[16, 13, 20,"
    result = parse_dialect(text, "earthdial")
    assert result.detections[0].box == HBB(190, 190, 230, 230)
    assert iou(result.detections[1].box, HBB(110, 180, 210, 220)) == pytest.approx(1.0)
    assert result.skipped == 1 and result.raw_lines == 3
    tagged = parse_dialect("<ref>white tank</ref><box>[[1, 2, 3, 4], [5, 6, 7, 8]]</box>", "earthdial")
    assert [(d.label, d.box) for d in tagged.detections] == [
        ("white tank", HBB(10, 20, 30, 40)),
        ("white tank", HBB(50, 60, 70, 80)),
    ]


def test_internvl_lists_on_a_0_1000_grid():
    result = parse_dialect("<ref>car</ref><box>[[100, 200, 300, 400]]</box>", "internvl")
    assert result.detections == [Detection("car", HBB(100, 200, 300, 400))]


def test_qwen_json_in_pixels():
    text = (
        "```json\n"
        '[{"bbox_2d": [10, 20, 110, 220], "label": "car"},\n'
        ' {"bbox_2d": [300, 0, 100, 50], "label": "small  truck"},\n'
        ' {"point_2d": [5, 5], "label": "dot"}]\n'
        "```"
    )
    result = parse_dialect(text, "qwen", width=200, height=400)
    assert [(d.label, d.box) for d in result.detections] == [("car", HBB(50, 50, 550, 550))]
    assert [(b.label, b.reason) for b in result.invalid] == [("small truck", "x1 > x2")]
    assert result.skipped == 1
    truncated = parse_dialect(
        '[{"bbox_2d": [0, 0, 20, 40], "label": "car"}, {"bbox_2d": [1, 2', "qwen", width=200, height=400
    )
    assert truncated.detections == [Detection("car", HBB(0, 0, 100, 100))]
    assert truncated.skipped == 1


def test_dialect_configuration_errors_raise():
    with pytest.raises(ValueError, match="known: earthgpt"):
        parse_dialect("", "llava")
    with pytest.raises(ValueError, match="width= and height="):
        parse_dialect("[]", "qwen")
    with pytest.raises(ValueError, match="positive"):
        parse_dialect("[]", "qwen", width=0, height=10)
