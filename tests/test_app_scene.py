"""Whole-scene detection: tiling, placing tile answers in the raster, merging across tiles, the
``earthgpt detect`` command and the app's scene button (scripted model, real raster)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely import box as shapely_box

from app import handlers as H
from app.scene import run_scene_detection
from app.session_io import Session
from earthgpt.box_spaces import raster_to_grid
from earthgpt.commands import detect as detect_cmd
from earthgpt.geometry import HBB, Detection, iou, obb_from_corners, obb_from_cxcywha
from earthgpt.raster import Tile, tile_grid
from earthgpt.scene_detection import (
    detect_scene,
    edge_margin,
    join_cut_boxes,
    merge_detections,
    tile_to_raster,
)
from earthgpt.textbox import format_box


def test_tile_grid_covers_the_raster_with_overlap() -> None:
    tiles = tile_grid(1000, 600, tile=512, overlap=64)
    offsets = [(t.col_off, t.row_off) for t in tiles]
    assert offsets == [(0, 0), (448, 0), (488, 0), (0, 88), (448, 88), (488, 88)]
    assert all(t.width == 512 and t.height == 512 for t in tiles)
    covered = np.zeros((600, 1000), bool)
    for t in tiles:
        covered[t.row_off : t.row_off + t.height, t.col_off : t.col_off + t.width] = True
    assert covered.all()
    assert tile_grid(100, 50, 512, 64) == [Tile(0, 0, 100, 50)]
    with pytest.raises(ValueError, match="overlap"):
        tile_grid(100, 100, 64, 64)


def test_tile_to_raster_places_hbb_and_obb() -> None:
    tile = Tile(448, 88, 512, 512)
    det = tile_to_raster(Detection("ship", HBB(0, 500, 1000, 1000)), tile)
    assert det.box == HBB(448, 88 + 256, 448 + 512, 88 + 512)
    obb = obb_from_cxcywha(500, 500, 200, 100, 30)
    placed = tile_to_raster(Detection("plane", obb), tile).box
    assert placed.center == pytest.approx((448 + 256, 88 + 256))


def test_merge_prefers_the_tile_that_sees_the_object_whole() -> None:
    whole = Detection("ship", HBB(100, 100, 140, 120))
    cut = Detection("ship", HBB(100, 100, 130, 120))  # clipped by the right border of its tile
    other = Detection("car", HBB(100, 100, 140, 120))  # another class is never suppressed
    margins = [edge_margin(whole.box, Tile(0, 0, 300, 300), 1000, 1000),
               edge_margin(cut.box, Tile(-170, 0, 300, 300), 1000, 1000), 5.0]
    assert margins[1] == 0
    kept = merge_detections([cut, whole, other], 0.5, [margins[1], margins[0], margins[2]])
    assert kept == [whole, other]


def _visible_parts(objects: list[HBB], tiles: list[Tile]) -> list[str]:
    """A perfect model's answers: the part of each object its window shows (more than 4 px a side)."""
    answers = []
    for tile in tiles:
        lines = []
        for box in objects:
            x1, y1 = max(box.x1, tile.col_off), max(box.y1, tile.row_off)
            x2, y2 = min(box.x2, tile.col_off + tile.width), min(box.y2, tile.row_off + tile.height)
            if x2 - x1 > 4 and y2 - y1 > 4:
                lines.append(f"plane {format_box(raster_to_grid(HBB(x1, y1, x2, y2), tile))}")
        answers.append("\n".join(lines))
    return answers


def test_an_object_cut_by_window_borders_is_one_box() -> None:
    """Review of 2026-12-04: a plane whose top 12 px show in one window and all of it in the next
    came out twice (the piece's IoU with the whole is 0.2, under NMS's 0.5). Pieces a window sees
    whole are dropped; pieces no window sees whole (wider than the overlap, or at a corner of four
    windows) are joined; two planes side by side across a border stay two."""
    width, height = 1100, 1100
    tiles = tile_grid(width, height, 512, 64)  # starts 0, 448, 588 on both axes
    objects = [
        HBB(430, 500, 500, 560),  # 12 px in the top row of windows, whole in the second
        HBB(300, 700, 700, 760),  # 400 px wide: no window sees it whole
        HBB(400, 400, 560, 560),  # over the corner of four windows
        HBB(40, 470, 70, 530), HBB(40, 531, 70, 580),  # two planes touching across a border
    ]
    answers = iter(_visible_parts(objects, tiles))
    result = detect_scene(tiles, lambda t: np.zeros((4, 4, 3), np.uint8),
                          lambda images: [next(answers) for _ in images], raster_size=(width, height),
                          batch=4)
    found = [d.box for d in result.detections]
    assert len(found) == len(objects), found
    for truth in objects:
        assert max(iou(truth, box) for box in found) > 0.97, (truth, found)


def test_join_cut_boxes_keeps_whole_boxes_and_joins_oriented_pieces() -> None:
    left, right = Tile(0, 0, 512, 512), Tile(448, 0, 512, 512)
    # one oriented plane at 15°, centre on the shared strip, cut by both windows' inner borders
    plane = obb_from_cxcywha(480, 200, 300, 60, 15).polygon()
    pieces = []
    for tile in (left, right):
        part = plane.intersection(shapely_box(tile.col_off, 0, tile.col_off + tile.width, 512))
        corners = list(part.minimum_rotated_rectangle.exterior.coords)[:4]
        pieces.append(Detection("plane", obb_from_corners(corners)))
    margins = [edge_margin(d.box, t, 960, 512) for d, t in zip(pieces, (left, right), strict=True)]
    assert max(margins) < 1
    joined, ranks = join_cut_boxes(pieces, [left, right], margins)
    assert len(joined) == 1 and ranks == [512.0]
    assert joined[0].box.polygon().symmetric_difference(plane).area < 0.02 * plane.area
    # a box of the same class elsewhere in the other window, or of another class, is left alone
    other = [pieces[0], Detection("plane", HBB(600, 400, 640, 440)), Detection("car", pieces[1].box)]
    kept, _ = join_cut_boxes(other, [left, right, right], [0.0, 80.0, 0.0])
    assert kept == other
    # two boxes of one window never join, however they overlap
    same = [Detection("plane", HBB(480, 10, 512, 40)), Detection("plane", HBB(470, 12, 512, 42))]
    assert join_cut_boxes(same, [left, left], [0.0, 0.0])[0] == same
    with pytest.raises(ValueError, match="one tile and margin"):
        join_cut_boxes(same, [left], [0.0, 0.0])


def test_detect_scene_batches_skips_nodata_and_filters_classes() -> None:
    tiles = tile_grid(200, 100, tile=100, overlap=0)
    calls: list[int] = []

    def read(tile: Tile) -> np.ndarray | None:
        return None if tile.col_off == 100 else np.zeros((100, 100, 3), np.uint8)

    def answer(images: list[np.ndarray]) -> list[str]:
        calls.append(len(images))
        return ["Ship [0, 0, 500, 500]\ncar [500, 500, 1000, 1000]\nbroken [1, 2"] * len(images)

    seen: list[tuple[int, int]] = []
    result = detect_scene(tiles, read, answer, raster_size=(200, 100), batch=2, classes=["ship"],
                          progress=lambda done, total: seen.append((done, total)))
    assert calls == [1] and seen == [(2, 2)]
    assert result.tiles == 2 and result.tiles_empty == 1 and result.lines_skipped == 1
    assert result.counts() == {"Ship": 1} and result.detections[0].box == HBB(0, 0, 50, 50)


class TileChat:
    """Answers with one ship at the raster position (1000, 650) in whatever tile it is shown."""

    def __init__(self) -> None:
        self.image = None

    def set_image(self, rgb: np.ndarray) -> None:
        self.image = rgb

    def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False, **options: object) -> str:
        return "ship [100, 100, 200, 200]\nship [900, 900, 1000, 1000]"


def _scene(tmp_path: Path, crs: str | None = "EPSG:32633") -> Path:
    profile = {"driver": "GTiff", "count": 3, "height": 300, "width": 400, "dtype": "uint8"}
    if crs:
        profile.update(crs=crs, transform=from_origin(500000, 4000000, 10, 10))
    path = tmp_path / "scene.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.random.default_rng(1).integers(1, 255, (3, 300, 400), dtype=np.uint8))
    return path


def _args(image: Path, out: Path, **extra: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    detect_cmd.add_arguments(parser)
    argv = [str(image), "--out", str(out), "--tile", "200", "--overlap", "40", "--batch", "3"]
    for key, value in extra.items():
        argv += [f"--{key}", str(value)] if value is not True else [f"--{key}"]
    return parser.parse_args(argv)


def test_cli_detect_writes_geojson_and_gpkg(tmp_path: Path) -> None:
    image = _scene(tmp_path)
    args = _args(image, tmp_path / "out.geojson")
    result, sensor = detect_cmd.detect_file(args, lambda s: TileChat(), "tiny")
    assert sensor == "optical" and result.tiles == 6
    assert sum(result.counts().values()) == len(result.detections) > 0
    data = json.loads((tmp_path / "out.geojson").read_text())
    assert len(data["features"]) == len(result.detections) and "note" not in data
    props = data["features"][0]["properties"]
    assert props["model"] == "tiny" and props["source"] == "scene.tif" and props["box"] == "hbb"
    lon, lat = data["features"][0]["geometry"]["coordinates"][0][0]
    assert 14 < lon < 16 and 35 < lat < 37  # UTM 33N near 36°N
    detect_cmd.detect_file(_args(image, tmp_path / "out.gpkg"), lambda s: TileChat(), "tiny")
    info = pyogrio.read_info(tmp_path / "out.gpkg")
    assert info["crs"] == "EPSG:32633" and info["features"] == len(result.detections)
    west, south, east, north = info["total_bounds"]
    assert 500000 <= west < east <= 504000 and 3997000 <= south < north <= 4000000


def test_cli_detect_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff at all")
    with pytest.raises(ValueError, match="corrupt"):
        detect_cmd.detect_file(_args(broken, tmp_path / "x.geojson"), lambda s: TileChat(), "t")
    with pytest.raises(ValueError, match="--out"):
        detect_cmd.detect_file(_args(_scene(tmp_path), tmp_path / "x.shp"), lambda s: TileChat(), "t")


def test_app_scene_button_replaces_earlier_scene_runs(tmp_path: Path) -> None:
    engine = H.Engine("scripted", lambda sensor: TileChat())
    session = H.load_image(Session(), _scene(tmp_path))
    progress: list[tuple[int, int]] = []
    first, result = run_scene_detection(session, engine, tile=200, overlap=40, batch=2,
                                        progress=lambda d, t: progress.append((d, t)))
    assert progress[-1] == (6, 6) and len(progress) == 3
    assert len(first.found) == len(result.detections) and all(f.source == "scene" for f in first.found)
    again, _ = run_scene_detection(first, engine, tile=200, overlap=40, obb=True)
    assert len(again.found) == len(first.found)
    with pytest.raises(H.UserError, match="overlap"):
        run_scene_detection(session, engine, tile=200, overlap=200)


def test_scene_reads_each_tile_once_not_the_whole_file_per_tile(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The header and sensor are worked out once per run; no overview probe per tile."""
    from earthgpt.raster import model_input

    engine = H.Engine("scripted", lambda sensor: TileChat())
    session = H.load_image(Session(), _scene(tmp_path))
    calls = {"inspect": 0, "read_overview": 0, "read_window": 0}
    for name in calls:
        original = getattr(model_input, name)

        def counted(*args: object, _name: str = name, _original: Any = original, **kwargs: object) -> object:
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(model_input, name, counted)
    _, result = run_scene_detection(session, engine, tile=200, overlap=40, batch=2)
    assert result.tiles == 6
    assert calls == {"inspect": 1, "read_overview": 0, "read_window": 6}


class LimitedChat(TileChat):
    """A chat whose answers report their token count (as ``ChatSession.answer_ids`` does)."""

    def __init__(self, tokens: int, seen: list[int]) -> None:
        super().__init__()
        self.tokens, self.seen = tokens, seen

    def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False, **options: object) -> str:
        self.seen.append(max_new_tokens)
        self.answer_ids = list(range(min(self.tokens, max_new_tokens)))
        return super().ask(text, max_new_tokens, stream)


def test_scene_has_its_own_answer_limit_and_says_when_answers_hit_it(tmp_path: Path) -> None:
    limits: list[int] = []
    engine = H.Engine("scripted", lambda sensor: LimitedChat(10_000, limits), max_new_tokens=256)
    session = H.load_image(Session(), _scene(tmp_path))
    cut, result = run_scene_detection(session, engine, tile=200, overlap=40)
    assert set(limits) == {512}  # the scene's limit, not the chat's 256
    assert result.answers_at_limit == 6 and "boxes may be missing" in result.limit_note()
    assert "boxes may be missing" in H.info_markdown(cut)
    short = H.Engine("scripted", lambda sensor: LimitedChat(40, limits))
    whole, result = run_scene_detection(cut, short, tile=200, overlap=40)
    assert result.answers_at_limit == 0 and result.limit_note() == "" and whole.scene_note == ""
    assert "boxes may be missing" not in H.info_markdown(whole)


def test_cli_warns_when_answers_hit_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import earthgpt.inference

    monkeypatch.setattr(earthgpt.inference, "load_model", lambda name, **_: (object(), object()))
    monkeypatch.setattr(earthgpt.inference, "ChatSession", lambda *a, **k: LimitedChat(9999, []))
    assert detect_cmd.run(_args(_scene(tmp_path), tmp_path / "out.geojson", **{"max-new-tokens": 64})) == 0
    assert "6 of 6 window answers stopped at the answer length limit" in capsys.readouterr().err


def test_clipped_iou_of_horizontal_boxes_equals_the_polygon_one() -> None:
    import shapely

    from earthgpt.scene_detection import _clipped_iou

    rng = np.random.default_rng(5)
    region = np.array([20.0, 10.0, 80.0, 90.0])
    frame = shapely.box(*region)
    for _ in range(300):
        (ax1, ax2), (ay1, ay2), (bx1, bx2), (by1, by2) = np.sort(rng.uniform(0, 100, (4, 2)), axis=1)
        a, b = HBB(ax1, ay1, ax2, ay2), HBB(bx1, by1, bx2, by2)
        pa, pb = (shapely.box(*box.as_list()).intersection(frame) for box in (a, b))
        union = pa.union(pb).area
        assert _clipped_iou(a, b, region) == pytest.approx(pa.intersection(pb).area / union if union else 0.0)
