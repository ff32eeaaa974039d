"""Unusable boxes end to end: the default model's ``car [161, 161, 161, 161]``, swapped corners and
boxes off the image are reported as invalid and never drawn, mapped or exported; the map and the
exports never fail on one bad detection (e.g. from an old session file); GeoPackage layers hold
polygons only, as pyogrio and ``ogrinfo`` both read them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin

from app import handlers as H
from app.maps import session_map
from app.overlay import session_view
from app.session_io import Found, Session
from earthgpt.commands import detect as detect_cmd
from earthgpt.geometry import HBB, Detection, obb_from_corners
from earthgpt.vector_export import feature_collection, write_gpkg

ANSWER = (
    "car [161, 161, 161, 161]\n"
    "ship [100, 200, 300, 400]\n"
    "car [161, 161, 161, 161]\n"
    "tank [600, 500, 400, 700]\n"
    "plane [1200, 100, 1300, 200]\n"
    "boat [10, 10, 20, 20, 30, 30, 40, 40]"
)
"""One usable box among five the model should not have written."""


class Scripted:
    """Every question gets :data:`ANSWER`, streamed in two pieces."""

    def set_image(self, rgb: np.ndarray) -> None:
        self.shape = rgb.shape

    def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False, **options: object):
        half = len(ANSWER) // 2
        return iter([ANSWER[:half], ANSWER[half:]]) if stream else ANSWER


ENGINE = H.Engine("scripted", lambda sensor: Scripted())


def assert_polygon_layer(path: Path, features: int) -> None:
    """One POLYGON layer of ``features`` polygons with an area, as pyogrio reads it."""
    info = pyogrio.read_info(path)
    assert info["geometry_type"] == "Polygon" and info["features"] == features
    _, _, geometry, _ = pyogrio.raw.read(path)
    assert all(isinstance(g, shapely.Polygon) and g.area > 0 for g in shapely.from_wkb(geometry))


def test_exports_leave_out_unusable_boxes_and_say_why(tmp_path: Path) -> None:
    dets = [Detection("car", HBB(161, 161, 161, 161)), Detection("ship", HBB(10, 10, 50, 60)),
            Detection("road", obb_from_corners([(0, 0), (10, 10), (20, 20), (30, 30)])),
            Detection("tank", HBB(5000, 0, 5100, 10))]
    props = [{"turn": 1}] * len(dets)
    collection = feature_collection(dets, props, raster_size=(1000, 1000))
    assert [f["properties"]["class"] for f in collection["features"]] == ["ship"]
    assert collection["skipped"] == [{"class": "car", "reason": "zero area"},
                                     {"class": "road", "reason": "zero area"},
                                     {"class": "tank", "reason": "off the image"}]
    skipped = write_gpkg(str(tmp_path / "d.gpkg"), dets, props, raster_size=(1000, 1000))
    assert skipped == collection["skipped"]
    assert_polygon_layer(tmp_path / "d.gpkg", 1)
    write_gpkg(str(tmp_path / "none.gpkg"), dets[:1], props[:1])  # nothing usable: still a POLYGON layer
    assert_polygon_layer(tmp_path / "none.gpkg", 0)
    assert set(pyogrio.read_info(tmp_path / "none.gpkg")["fields"]) >= {"turn", "class", "score", "box"}


def test_chat_detection_with_degenerate_boxes(shared_data: Path, tmp_path: Path) -> None:
    landsat = shared_data / "geotiff" / "optical" / "RGB.byte.tif"
    session = H.load_image(Session(), landsat)
    session = list(H.quick_task(session, ENGINE, "detection_hbb"))[-1]
    assert [f.detection.label for f in session.found] == ["ship"]
    table = H.parsed_markdown(session)
    assert "**5 invalid boxes** (not drawn, mapped or exported)" in table
    reasons = [line.rsplit("|", 2)[-2].strip() for line in table.splitlines() if line.startswith("| ")][-5:]
    assert reasons == ["⚠ zero area", "⚠ zero area", "⚠ x1 > x2", "⚠ off the image", "⚠ zero area"]
    assert session_view(session) is not None
    assert "<iframe" in session_map(session, "scripted") and "Not on the map" not in session_map(session)
    geojson, note = H.export_file(session, tmp_path, "scripted", "geojson")
    assert note == "1 detection exported." and len(json.loads(geojson.read_text())["features"]) == 1
    gpkg, _ = H.export_file(session, tmp_path, "scripted", "gpkg")
    assert_polygon_layer(gpkg, 1)
    cleared = H.clear_detections(session)
    assert cleared.found == [] and cleared.turns == session.turns
    reviewed = dataclasses.replace(session, found=[
        dataclasses.replace(session.found[0], status="accepted"),
        dataclasses.replace(session.found[0], source="analyst", model=""),
        session.found[0],
    ])
    assert [f.status for f in H.clear_detections(reviewed).found] == ["accepted", "pending"]
    assert [f.source for f in H.clear_detections(reviewed).found][1] == "analyst"
    with pytest.raises(H.UserError, match="nothing to export yet"):
        H.export_file(cleared, tmp_path, "scripted", "geojson")


def test_a_bad_detection_from_an_old_session_is_skipped(shared_data: Path, tmp_path: Path) -> None:
    session = H.load_image(Session(), shared_data / "geotiff" / "optical" / "RGB.byte.tif")
    bad = Found(Detection("car", HBB(50, 50, 50, 50)), "p", 1)
    good = Found(Detection("ship", HBB(9, 9, 90, 90)), "p", 1)
    session = Session(**{**session.__dict__, "found": [bad, good],
                         "turns": [H.Turn("detection_hbb", "p", "car [1, 1, 1, 1]", session.window)]})
    assert "⚠ invalid: zero area" in H.parsed_markdown(session)
    assert session_view(session) is not None
    assert "⚠ Not on the map: 1 detection left out: zero area (1)." in session_map(session, "scripted")
    _, note = H.export_file(session, tmp_path, "scripted", "geojson")
    assert note == "1 detection exported. 1 detection left out: zero area (1)."
    gpkg, _ = H.export_file(session, tmp_path, "scripted", "gpkg")
    assert_polygon_layer(gpkg, 1)
    only_bad = Session(**{**session.__dict__, "found": [bad]})
    with pytest.raises(H.UserError, match=r"nothing to export: 1 detection left out: zero area"):
        H.export_file(only_bad, tmp_path, "scripted", "gpkg")
    assert_polygon_layer(gpkg, 1)  # nothing written: the earlier export is whole, none half-written
    assert "<iframe" in session_map(only_bad)


def test_a_box_off_the_earth_is_left_out_not_fatal(shared_data: Path, tmp_path: Path) -> None:
    goes = shared_data / "geotiff" / "optical" / "goes.tif"
    session = H.load_image(Session(), goes)
    corner, centre = HBB(0, 0, 20, 20), HBB(session.info.width / 2 - 10, session.info.height / 2 - 10,
                                          session.info.width / 2 + 10, session.info.height / 2 + 10)
    session = Session(**{**session.__dict__, "found": [Found(Detection("ship", b), "p", None, "scene")
                                                       for b in (corner, centre)]})
    path, note = H.export_file(session, tmp_path, "scripted", "geojson")
    assert note.startswith("1 detection exported. 1 detection left out: a box has corners off the Earth")
    assert len(json.loads(path.read_text())["features"]) == 1


def _geotiff(path: Path, size: int = 128) -> Path:
    pixels = np.random.default_rng(0).integers(0, 255, (3, size, size), dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 4600000, 10, 10)) as dst:
        dst.write(pixels)
    return path


@pytest.mark.parametrize("suffix", [".geojson", ".gpkg"])
def test_detect_cli_drops_unusable_boxes(tmp_path: Path, suffix: str, monkeypatch, capsys) -> None:
    import earthgpt.inference as inference

    out = tmp_path / f"scene{suffix}"
    argv = [str(_geotiff(tmp_path / "scene.tif")), "--out", str(out), "--sensor", "optical",
            "--tile", "64", "--overlap", "0", "--model", "scripted"]
    parser = argparse.ArgumentParser()
    detect_cmd.add_arguments(parser)
    monkeypatch.setattr(inference, "load_model", lambda *a, **k: (None, None))
    monkeypatch.setattr(inference, "ChatSession", lambda *a, **k: Scripted())
    monkeypatch.setattr(inference, "is_untrained_start", lambda name: False)
    assert detect_cmd.run(parser.parse_args(argv)) == 0
    printed = capsys.readouterr().out
    assert "4 objects in 4 windows" in printed  # one ship per window
    dropped = "dropped: 20 boxes left out as not usable: zero area (12), x1 > x2 (4), off the image (4)"
    assert dropped in printed
    if suffix == ".gpkg":
        assert_polygon_layer(out, 4)
    else:
        data = json.loads(out.read_text())
        assert [f["geometry"]["type"] for f in data["features"]] == ["Polygon"] * 4 and "skipped" not in data


@pytest.mark.skipif(shutil.which("ogrinfo") is None,
                    reason="ogrinfo is missing (gdal-bin; scripts/setup.sh --dev installs it)")
def test_ogrinfo_reads_the_layers_as_pyogrio_does(tmp_path: Path) -> None:
    dets = [Detection("car", HBB(161, 161, 161, 161)), Detection("ship", HBB(10, 10, 50, 60)),
            Detection("plane", obb_from_corners([(60, 60), (90, 70), (80, 100), (50, 90)]))]
    write_gpkg(str(tmp_path / "pixels.gpkg"), dets, [{}] * 3)
    write_gpkg(str(tmp_path / "empty.gpkg"), dets[:1], [{}])
    write_gpkg(str(tmp_path / "utm.gpkg"), dets, [{}] * 3, crs="EPSG:32633",
               to_map=lambda points: [(500000 + 10 * x, 4600000 - 10 * y) for x, y in points])
    for name, count in (("pixels", 2), ("empty", 0), ("utm", 2)):
        path = tmp_path / f"{name}.gpkg"
        assert_polygon_layer(path, count)
        run = subprocess.run(["ogrinfo", "-ro", "-al", str(path)], capture_output=True, text=True, check=True)
        assert "Geometry: Polygon" in run.stdout and f"Feature Count: {count}" in run.stdout
        shapes = [row.split()[0] for row in run.stdout.splitlines() if row.startswith("  ") and "((" in row]
        assert shapes == ["POLYGON"] * count
        assert "ERROR" not in run.stderr
