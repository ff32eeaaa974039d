"""The analyst's reviewed boxes as MMRS training records (app/mmrs_export.py): crops that give the
model the pixels it saw, records that `earthgpt mmrs build` (source kind ``mmrs``) and the
training loader read, windows and clipping, and the ``mmrs`` source kind's skips."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import shapely

from app import annotations as A
from app import handlers as H
from app.demo_tiles import DEMO_DIR, demo_tiles
from app.mmrs_export import clip_to_window, export_mmrs
from app.session_io import Found, Session
from earthgpt.cli import main
from earthgpt.data.image_resolver import ImageResolver
from earthgpt.data.mmrs_reader import read_records, record_turns
from earthgpt.geometry import HBB, Detection, obb_from_cxcywha
from earthgpt.raster import model_image
from train.data import load_records


def _reviewed(session: Session) -> Session:
    """Two accepted boxes of the analyst (one rotated, with a description) and one pending model box."""
    session = A.add_box(session, "ship", "[100, 100, 400, 300]")
    session = A.add_box(session, "plane", "[500, 500, 700, 600]", angle=30, note="the plane on the right")
    found = Found(Detection("car", HBB(5, 5, 9, 9)), "Detect all objects.", None, "scene")
    return Session(**{**session.__dict__, "found": [*session.found, found]})


def _records(zip_path: Path) -> list[dict]:
    lines = (zip_path.with_suffix("") / "records.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("key", list(demo_tiles()))
def test_crops_give_the_model_the_pixels_it_saw(key: str, tmp_path: Path) -> None:
    tile = demo_tiles()[key]
    session = _reviewed(H.load_image(Session(), tile.paths[0], sensor=tile.sensor.value))
    archive, note = export_mmrs(session, tmp_path, "nano")
    (record,) = _records(archive)
    assert record["sensor"] == tile.sensor.value and record["split"] == "train"
    rgb, meta = model_image(archive.with_suffix("") / record["image"], sensor=record["sensor"])
    assert np.array_equal(rgb, session.model_image)  # optical GeoTIFF, SAR VV + VH pair, infrared JPEG
    assert (meta["pair"] is not None) == (tile.sensor.value == "sar")
    assert "1 training record(s) from 2 accepted box(es)" in note
    assert "1 pending detection(s) left out" in note
    with zipfile.ZipFile(archive) as packed:
        assert f"{archive.stem}/records.jsonl" in packed.namelist()


def test_records_hold_detection_grounding_and_region_captions(tmp_path: Path) -> None:
    session = _reviewed(H.load_image(Session(), DEMO_DIR / "RGB.byte.tif"))
    (record,) = _records(export_mmrs(session, tmp_path, "nano")[0])
    assert record["id"] == "analyst/RGB.byte/0_0_791x718" and record["image_root"] == "RGB.byte_mmrs"
    assert record["tasks"] == ["detection_hbb", "detection_obb", "grounding", "region_caption"]
    turns = {turn.task: turn for turn in record_turns(record)}
    assert turns["detection_hbb"].answer == "ship [100, 100, 400, 300]\nplane [491, 452, 709, 648]"
    assert turns["detection_obb"].answer.startswith("ship [100, 100, 400, 100, 400, 300, 100, 300]\nplane [")
    assert "the plane on the right" in turns["grounding"].question
    assert turns["grounding"].answer == "[491, 452, 709, 648]"
    assert turns["region_caption"].answer == "the plane on the right."
    assert not any(turn.generated for turn in record_turns(record))
    origins = record["provenance"]["objects"]
    assert [(o["label"], o["source_kind"]) for o in origins] == [("ship", "analyst"), ("plane", "analyst")]


def test_build_and_training_loader_read_the_export(tmp_path: Path, capsys) -> None:
    session = _reviewed(H.load_image(Session(), DEMO_DIR / "RGB.byte.tif"))
    folder = export_mmrs(session, tmp_path / "export", "nano")[0].with_suffix("")
    exported = read_records(folder, "train")
    built = tmp_path / "built"
    assert main(["mmrs", "build", "--source", f"mmrs={folder}", "--out", str(built), "--no-progress"]) == 0
    (record,) = read_records(built, "train")
    assert record["id"] == exported[0]["id"] and record["annotations"] == exported[0]["annotations"]
    native = [t for t in record["conversations"] if not t["generated"]]
    assert native == exported[0]["conversations"]  # the build adds template turns after the same native ones
    for source, roots in ((f"mmrs={folder}", {}), (f"mmrs={built}", {folder.name: str(folder)})):
        records, resolver = load_records([source], "train", roots)
        assert isinstance(resolver, ImageResolver) and resolver(records[0]).is_file()
        answers = [t.answer for t in record_turns(records[0])]
        assert answers[:2] == [t.answer for t in record_turns(exported[0])][:2]


def test_windows_clipping_and_what_is_left_out(tmp_path: Path) -> None:
    session = H.load_image(Session(), DEMO_DIR / "RGB.byte.tif")
    session = H.set_window(session, 0, 0, 400, 400)
    session = A.add_box(session, "ship", "[900, 900, 1000, 1000]")  # raster pixels 360..400
    session = H.set_window(session, 391, 318, 400, 400)
    session = A.add_box(session, "field", "[0, 0, 250, 250]")  # straddles the first window a little
    far = Found(Detection("tank", HBB(700, 50, 720, 70)), "p", None, "scene", "accepted")
    session = Session(**{**session.__dict__, "found": [*session.found, far]})
    archive, note = export_mmrs(session, tmp_path, "nano")
    records = {r["id"].rsplit("/", 1)[1]: r for r in _records(archive)}
    assert set(records) == {"391_318_400x400", "0_0_400x400"}
    assert [o["label"] for o in records["0_0_400x400"]["annotations"]["objects_hbb"]] == ["ship"]
    assert [o["label"] for o in records["391_318_400x400"]["annotations"]["objects_hbb"]] == ["field"]
    assert "1 accepted box(es) lie outside these windows" in note
    assert clip_to_window(HBB(390, 10, 420, 20), (0, 0, 400, 400)) is None  # a third inside: left out
    assert clip_to_window(HBB(380, 10, 410, 20), (0, 0, 400, 400)) == HBB(380, 10, 400, 20)


@pytest.mark.parametrize(("angle", "cx"), [(30, 395), (-30, 395), (60, 399), (120, 399)])
def test_an_oriented_box_cut_by_the_window_edge_stays_a_rectangle_along_its_axes(angle: float,
                                                                                 cx: float) -> None:
    """A ship turned with its bow past the window's right edge: the record gets the part that is
    inside, as a rectangle at the ship's own angle (not a quadrilateral pressed onto the edge)."""
    box = obb_from_cxcywha(cx, 200, 24, 10, angle)
    window = (0, 0, 400, 400)
    clipped = clip_to_window(box, window)
    assert clipped is not None and clipped != box
    inside = box.polygon().intersection(shapely.box(0, 0, 400, 400))
    assert inside.difference(clipped.polygon()).area < 1e-6  # nothing inside is lost
    assert clipped.area < box.area and clipped.polygon().within(box.polygon().buffer(1e-6))
    corners = np.array(clipped.corners)
    for start, end in zip(corners, np.roll(corners, -1, axis=0), strict=True):  # tight: each side touches
        assert inside.distance(shapely.LineString([start, end])) < 1e-6
    edges = np.roll(corners, -1, axis=0) - corners
    for first, second in zip(edges, np.roll(edges, -1, axis=0), strict=True):  # four right angles
        assert abs(first @ second) < 1e-6 * np.linalg.norm(first) * np.linalg.norm(second)
    directions = {round(np.degrees(np.arctan2(dy, dx)) % 90, 6) for dx, dy in edges}
    assert directions == {round(angle % 90, 6)}  # the ship's own orientation


def test_nothing_accepted_is_refused(tmp_path: Path) -> None:
    session = H.load_image(Session(), DEMO_DIR / "RGB.byte.tif")
    with pytest.raises(H.UserError, match="nothing reviewed yet"):
        H.export_file(session, tmp_path, "nano", "mmrs")


def test_mmrs_source_kind_counts_bad_records(tmp_path: Path) -> None:
    good = {"id": "x/1", "image_root": "x", "image": "a.png", "width": 10, "height": 10, "sensor": "sar",
            "annotations": {"captions": ["A ship."]}, "conversations": []}
    lines = [good, {**good, "id": "x/2", "width": "wide"}, {k: v for k, v in good.items() if k != "image"}]
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "records.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    out = tmp_path / "out"
    assert main(["mmrs", "build", "--source", f"mmrs={tmp_path / 'set'}", "--option", "mmrs.split=val",
                 "--out", str(out), "--no-progress"]) == 0
    (record,) = read_records(out, "val")
    assert record["sensor"] == "sar" and record["conversations"][1]["value"] == "A ship."
    skipped = {row["reason"]: row["count"] for row in json.loads((out / "card.json").read_text())["skipped"]}
    assert skipped == {"record without image": 1, "record with a bad width or height": 1}


def test_reviewed_boxes_keep_their_window_and_description(tmp_path: Path) -> None:
    """Review of 2026-12-04: a box moved in another window, or a chat box after the conversation
    was cleared, lost its window (and its referring expression) and left the export; an oriented
    box in one window made every window's record an OBB one; an export with nothing placeable
    wrote an empty set; a description of full stops made the whole export fail."""
    from test_app_handlers import run, scripted_engine

    engine, _ = scripted_engine("[100, 100, 300, 300]")
    a, b = (0, 0, 400, 400), (391, 318, 400, 400)
    session = H.set_window(H.load_image(Session(), DEMO_DIR / "RGB.byte.tif"), *a)
    session = run(H.quick_task(session, engine, "grounding", "the big field"))
    session = A.relabel(session, 1, "field", "")  # accepted; its description is the referring phrase
    session = H.clear_conversation(H.set_window(session, *b))
    row = A.review_rows(session)[0]
    assert row[3] == "the big field" and row[-1].endswith("· chat · edited")
    (record,) = _records(export_mmrs(session, tmp_path / "cleared", "nano")[0])
    assert record["id"].endswith("/0_0_400x400") and record["annotations"]["referring"][0]["expression"] == (
        "the big field")
    session = A.add_box(H.set_window(session, *a), "car", "[600, 600, 700, 700]")
    session = A.set_box(H.set_window(session, *b), 2, "[100, 100, 200, 200]")  # moved, typed in window b
    session = A.add_box(session, "ship", "[500, 500, 700, 600]", angle=30, note="...")
    exported = _records(export_mmrs(session, tmp_path / "moved", "nano")[0])
    records = {r["id"].rsplit("/", 1)[1]: r for r in exported}
    assert set(records) == {"0_0_400x400", "391_318_400x400"}
    assert [o["label"] for o in records["391_318_400x400"]["annotations"]["objects_hbb"]] == ["car", "ship"]
    assert "objects_obb" not in records["0_0_400x400"]["annotations"]  # only window b has a rotated box
    assert "objects_obb" in records["391_318_400x400"]["annotations"]
    assert A.review_rows(session)[2][3] == ""  # "..." is no description
    lost = Found(Detection("car", HBB(5, 5, 9, 9)), "Detect all objects.", None, "scene", "accepted")
    alone = Session(**{**session.__dict__, "found": [lost], "window": b})
    with pytest.raises(H.UserError, match="none of the 1 accepted box"):
        export_mmrs(alone, tmp_path / "empty", "nano")
