"""The analyst's review (app/annotations.py): accept, delete, relabel, reshape, own boxes (HBB and
OBB by rotation); the review fields in session files (old files still open); provenance in the
GeoJSON and GeoPackage exports."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest

from app import annotations as A
from app import handlers as H
from app.demo_tiles import DEMO_DIR
from app.export import export_geojson, export_gpkg
from app.session_io import Found, Session, read_session, save_session, session_from_json, session_to_json
from earthgpt.geometry import HBB, OBB, Detection, box_angle
from earthgpt.tasks import Task, instruction

ANSWER = "ship [100, 100, 200, 180]\ntank [300, 300, 360, 360]\ncar [600, 600, 640, 660]"
PROVENANCE = {"source_kind", "origin", "model", "turn", "prompt", "status", "edited", "description"}


class Scripted:
    """Answers every question with one fixed text."""

    def __init__(self, answer: str) -> None:
        self.answer = answer

    def set_image(self, rgb: np.ndarray) -> None:
        self.shape = rgb.shape

    def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False, stop_rule: object = None):
        return iter([self.answer]) if stream else self.answer

    def restore(self, exchanges: list[tuple[str, str]]) -> None:
        self.exchanges = exchanges


def _asked(session: Session, prompt: str, answer: str, task: str = "ask") -> Session:
    engine = H.Engine("nano", lambda sensor: Scripted(answer))
    return list(H.ask(dataclasses.replace(session, chat=None), engine, prompt, task))[-1]


@pytest.fixture
def detected() -> Session:
    """The Landsat demo tile (791 × 718, one window) with three chat detections of turn 1."""
    session = H.load_image(Session(), DEMO_DIR / "RGB.byte.tif")
    return _asked(session, "Detect all objects.", ANSWER, Task.detection_hbb.value)


def test_accept_relabel_delete_and_own_boxes(detected: Session) -> None:
    assert [f.status for f in detected.found] == ["pending"] * 3
    session = A.accept(detected, [1])
    session = A.relabel(session, 2, "storage tank", "the round tank")
    session = A.delete(session, 3)
    session = A.add_box(session, "plane", "[500, 500, 700, 600]", angle=30, note="the plane on the right")
    session = A.add_box(session, "car", "[10, 10, 60, 40]")
    ship, tank, plane, car = session.found
    assert (ship.status, ship.edited, ship.detection.label) == ("accepted", False, "ship")
    assert (tank.status, tank.edited, tank.detection.label, tank.note) == ("accepted", True, "storage tank",
                                                                           "the round tank")
    assert isinstance(plane.detection.box, OBB)
    assert box_angle(plane.detection.box) == pytest.approx(30, abs=0.01)
    assert isinstance(car.detection.box, HBB) and car.source == plane.source == A.ANALYST
    assert plane.window == session.window and plane.status == "accepted"
    assert [A.provenance(f, "nano") for f in session.found] == [
        "nano · turn 1", "nano · turn 1 · edited", "analyst", "analyst"]
    rows = A.review_rows(session, "nano")
    assert [row[:3] for row in rows] == [[1, "accepted", "ship"], [2, "accepted", "storage tank"],
                                         [3, "accepted", "plane"], [4, "accepted", "car"]]
    assert rows[0][5] == "[100, 100, 200, 180]" and rows[2][4:7] == ["obb", "[500, 500, 700, 600]", 30.0]
    assert A.review_summary(session) == "4 annotations: 4 accepted, 0 pending"
    assert A.choices(session)[1] == ("#2 storage tank (accepted)", 2)


def test_accept_all_and_boxes_without_a_class(detected: Session) -> None:
    session = _asked(detected, instruction(Task.grounding, "optical", referring="the long pier"),
                     "[400, 100, 500, 300]", Task.grounding.value)
    grounded = session.found[-1]
    assert grounded.detection.label == "" and A.description(session, grounded) == "the long pier"
    with pytest.raises(H.UserError, match="no class yet"):
        A.accept(session, [4])
    session = A.accept_all(session)
    assert [f.status for f in session.found] == ["accepted"] * 3 + ["pending"]
    session = A.relabel(session, 4, "pier")
    pier = session.found[3]
    assert pier.status == "accepted" and A.description(session, pier) == "the long pier"


def test_set_box_moves_and_apply_keeps_an_untouched_box(detected: Session) -> None:
    text, angle = A.box_text(detected, detected.found[0].detection.box)
    assert (text, angle) == ("[100, 100, 200, 180]", 0.0)
    same = A.apply(detected, 1, "ship", "", "[100,100,200,180]", 0)
    assert same.found[0].detection.box == detected.found[0].detection.box and not same.found[0].edited
    moved = A.apply(detected, 1, "ship", "", "[110, 100, 210, 180]", 15)
    box = moved.found[0].detection.box
    assert isinstance(box, OBB) and moved.found[0].edited and moved.found[0].status == "accepted"
    assert A.box_text(moved, box) == ("[110, 100, 210, 180]", 15.0)  # the rotated box reads back
    corners = A.set_box(detected, 1, "[100, 100, 300, 120, 280, 200, 80, 180]").found[0].detection.box
    assert isinstance(corners, OBB)


def test_editor_boxes_are_window_pixels(detected: Session) -> None:
    size = (detected.view.shape[1] * 2, detected.view.shape[0] * 2)  # the editor's enlarged image
    shown = A.editor_box(detected, "[100, 100, 200, 180]", size)
    assert A.text_from_editor(detected, shown, size) == "[100, 100, 200, 180]"
    assert A.editor_box(detected, "[5, 5, 5, 5]", size) is None


@pytest.mark.parametrize(("call", "message"), [
    (lambda s: A.add_box(s, "", "[1, 1, 50, 50]"), "class is empty"),
    (lambda s: A.add_box(s, "ship [1", "[1, 1, 50, 50]"), "cannot hold"),
    (lambda s: A.add_box(s, "ship", "[5, 5, 5, 5]"), "zero area"),
    (lambda s: A.add_box(s, "ship", "the harbour"), "not 4 or 8 numbers"),
    (lambda s: A.delete(s, 9), "no annotation #9"),
    (lambda s: A.add_box(s, "ship", "[1, 1, 50, 50]", angle=float("nan")), "angle"),
])
def test_bad_review_input_is_refused(detected: Session, call, message: str) -> None:
    with pytest.raises(H.UserError, match=message):
        call(detected)


def test_session_file_keeps_the_review_and_old_files_open(detected: Session, tmp_path: Path) -> None:
    reviewed = A.relabel(A.accept(detected, [1]), 2, "tank", "a tank")
    session = A.add_box(reviewed, "plane", "[1, 1, 90, 90]", 20)
    path = save_session(session, tmp_path / "s.session.json", "nano")
    back = read_session(path)
    assert [(f.status, f.model, f.edited, f.note, f.source) for f in back.found] == [
        ("accepted", "nano", False, "", "chat"), ("accepted", "nano", True, "a tank", "chat"),
        ("pending", "nano", False, "", "chat"), ("accepted", "", False, "", "analyst")]
    assert back.found[3].window == session.window and back.found[3].detection == session.found[3].detection
    old = session_to_json(detected, "nano-v0")
    for item in old["detections"]:  # a file written before the review existed
        for key in ("status", "model", "edited", "note", "window"):
            del item[key]
    reopened = session_from_json(json.loads(json.dumps(old)))
    assert [(f.status, f.model, f.edited) for f in reopened.found] == [("pending", "nano-v0", False)] * 3
    old["detections"][0]["status"] = "maybe"
    with pytest.raises(ValueError, match=r"detections\[0\].*status"):
        session_from_json(old)


def test_exports_carry_provenance(detected: Session, tmp_path: Path) -> None:
    reviewed = A.relabel(A.accept(detected, [1]), 2, "storage tank")
    session = A.add_box(reviewed, "plane", "[500, 500, 700, 600]", 30, "the plane")
    session.found.append(Found(Detection("tank", HBB(10, 10, 30, 30)), "scene prompt", None, "scene"))
    path, _ = export_geojson(session, tmp_path, "nano")
    props = [f["properties"] for f in json.loads(path.read_text())["features"]]
    assert all(set(p) >= PROVENANCE for p in props)
    keys = ("source_kind", "origin", "model", "turn", "status", "edited")
    assert [tuple(p[k] for k in keys) for p in props] == [
        ("model", "chat", "nano", 1, "accepted", 0), ("model", "chat", "nano", 1, "accepted", 1),
        ("model", "chat", "nano", 1, "pending", 0), ("analyst", "analyst", "", None, "accepted", 0),
        ("model", "scene", "nano", None, "pending", 0)]
    assert props[3]["description"] == "the plane" and props[3]["box"] == "obb"
    gpkg, _ = export_gpkg(session, tmp_path, "nano")
    meta, _, _, fields = pyogrio.raw.read(gpkg)
    columns = dict(zip(meta["fields"], fields, strict=True))
    assert set(columns) >= PROVENANCE
    assert list(columns["source_kind"]) == [p["source_kind"] for p in props]
    assert list(columns["status"]) == [p["status"] for p in props]


def test_a_new_whole_scene_run_keeps_accepted_scene_detections() -> None:
    from app.scene import run_scene_detection

    session = H.load_image(Session(), DEMO_DIR / "RGB.byte.tif")
    engine = H.Engine("nano", lambda sensor: Scripted("ship [100, 100, 200, 180]"))
    first, _ = run_scene_detection(session, engine, tile=512, overlap=0)
    reviewed = A.accept(first, [1])
    again, _ = run_scene_detection(reviewed, engine, tile=512, overlap=0)
    assert again.found[0] == reviewed.found[0] and again.found[0].status == "accepted"
    assert [f.status for f in again.found[1:]] == ["pending"] * (len(first.found))


@pytest.mark.parametrize("angle", [30.0, -30.0, 45.0, 10.0, -44.0])
def test_a_rotated_box_reads_back_as_typed(detected: Session, angle: float) -> None:
    for text in ("[619, 621, 800, 741]", "[100, 100, 200, 400]", "[300, 500, 700, 540]"):
        session = A.add_box(detected, "car", text, angle)
        assert A.box_text(session, session.found[-1].detection.box) == (text, angle)
