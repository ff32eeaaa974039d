"""``earthgpt detect`` over an archive (:mod:`earthgpt.scene_archive`): a list, a glob and a folder
of small GeoTIFFs in different CRSs, a scripted model; 2 processes write the same features as 1,
a re-run skips the scenes done, a corrupt scene is listed and the others are written."""

from __future__ import annotations

import argparse
import functools
import json
import warnings
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

from earthgpt import scene_archive
from earthgpt.commands import detect as detect_cmd

WINDOWS = ("--sensor", "optical", "--tile", "128", "--overlap", "0", "--batch", "4")
"""A 256 × 192 scene is 4 windows."""


class PixelChat:
    """One ship per window, placed by the window's mean pixel: deterministic and different per scene."""

    calls = 0

    def __init__(self, sensor: object = None) -> None:
        self.offset = 0

    def set_image(self, rgb: np.ndarray) -> None:
        PixelChat.calls += 1
        self.offset = int(rgb.mean() * 7) % 400

    def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False, **options: object) -> str:
        a = self.offset
        return f"ship [{a}, {a + 100}, {a + 300}, {a + 400}]"


def _geotiff(path: Path, crs: str | None, origin: tuple[float, float], pixel: float, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "count": 3, "width": 256, "height": 192, "dtype": "uint8"}
    if crs:
        profile.update(crs=crs, transform=from_origin(*origin, pixel, pixel))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # pixel space on purpose
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.random.default_rng(seed).integers(1, 255, (3, 192, 256), dtype=np.uint8))
    return path


def _scenes(root: Path) -> list[str]:
    """Six scenes, five CRSs and one in pixel space; two named ``coast`` and one ``merged``. Returns
    the inputs: a list for the two in subfolders, a glob for the rest."""
    _geotiff(root / "a" / "coast.tif", "EPSG:32633", (500000, 4000000), 10, 1)
    _geotiff(root / "b" / "coast.tif", "EPSG:32632", (600000, 5000000), 5, 2)
    _geotiff(root / "harbour.tif", "EPSG:3857", (1300000, 5100000), 10, 3)
    _geotiff(root / "field.tif", "EPSG:4326", (12.0, 42.0), 0.0001, 4)
    _geotiff(root / "merged.tif", "EPSG:2154", (650000, 6860000), 10, 5)
    _geotiff(root / "photo.tif", None, (0, 0), 1, 6)
    (root / "list.txt").write_text("# two scenes with one name\na/coast.tif\nb/coast.tif\n\n")
    return [f"@{root / 'list.txt'}", str(root / "*.tif")]


def _args(inputs: list[str], out: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    detect_cmd.add_arguments(parser)
    return parser.parse_args([*inputs, "--out", str(out), *WINDOWS, *extra])


def _features(path: Path) -> list[tuple[str, str, str, str, bytes]]:
    """Every feature of every layer: (layer, CRS, scene, class, geometry as WKB), in file order."""
    rows = []
    for layer, _ in pyogrio.list_layers(path):
        meta, _, wkb, columns = pyogrio.raw.read(path, layer=layer)
        field = {name: column for name, column in zip(meta["fields"], columns, strict=True)}
        rows += [(str(layer), str(meta["crs"]), scene, label, bytes(geometry))
                 for scene, label, geometry in zip(field["scene"], field["class"], wkb, strict=True)]
    return rows


def test_two_processes_give_the_same_features_as_one(tmp_path: Path) -> None:
    inputs = _scenes(tmp_path / "scenes")
    one, two = _args(inputs, tmp_path / "one"), _args(inputs, tmp_path / "two", "--processes", "2")
    assert scene_archive.main(one, functools.partial(detect_cmd.scene_detector, one, PixelChat)) == 0
    assert scene_archive.main(two, functools.partial(detect_cmd.scene_detector, two, PixelChat)) == 0
    merged = _features(tmp_path / "one" / "merged.gpkg")
    assert merged == _features(tmp_path / "two" / "merged.gpkg")
    assert {layer for layer, *_ in merged} == {"detections", "pixel_space"}
    assert {crs for layer, crs, *_ in merged if layer == "detections"} == {"EPSG:4326"}  # 5 CRSs → lon/lat
    scenes = sorted({scene for _, _, scene, _, _ in merged})
    assert len(scenes) == 6 and len(merged) == 6 * 4  # one ship per window, every scene
    assert [s for s in scenes if s.startswith("coast-")] == sorted(s for s in scenes if "coast" in s)
    assert any(s.startswith("merged-") for s in scenes) and "photo" in scenes
    assert all((tmp_path / "two" / f"{scene}.gpkg").is_file() for scene in scenes)
    assert pyogrio.read_info(tmp_path / "two" / "harbour.gpkg")["crs"] == "EPSG:3857"  # a scene keeps its CRS
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert (manifest["done"], manifest["failed"], manifest["pending"]) == (6, 0, 0)
    assert manifest["merged"]["features"] == 5 * 4 and manifest["merged"]["pixel_space"] == 4


def _scripted_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's own model loading, with :class:`PixelChat` for the model."""
    import earthgpt.inference  # here: the workers of --processes import this module and need no torch

    monkeypatch.setattr(earthgpt.inference, "load_model", lambda name, **_: (object(), object()))
    monkeypatch.setattr(earthgpt.inference, "ChatSession", lambda *a, **k: PixelChat())
    monkeypatch.setattr(earthgpt.inference, "is_untrained_start", lambda name: False)


def test_a_corrupt_scene_is_listed_and_the_others_are_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "scenes"
    inputs = _scenes(root)
    (root / "broken.tif").write_bytes(b"not a tiff at all")
    _scripted_model(monkeypatch)
    assert detect_cmd.run(_args(inputs, tmp_path / "out")) == 1  # some scene failed
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    (failed,) = [row for row in manifest["scenes"] if row["status"] == "failed"]
    assert failed["scene"] == "broken" and "corrupt or unsupported format" in failed["error"]
    assert manifest["done"] == 6 and not (tmp_path / "out" / "broken.gpkg").exists()
    assert len({scene for _, _, scene, _, _ in _features(tmp_path / "out" / "merged.gpkg")}) == 6
    err = capsys.readouterr().err
    assert f"failed: {root / 'broken.tif'}: broken.tif is not a raster GDAL can read" in err
    assert "Traceback" not in err


def _mtimes(out: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in out.glob("*.gpkg") if path.name != "merged.gpkg"}


def test_a_rerun_skips_the_scenes_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = _scenes(tmp_path / "scenes")
    out = tmp_path / "out"
    _scripted_model(monkeypatch)
    PixelChat.calls = 0
    assert detect_cmd.run(_args(inputs, out)) == 0
    assert PixelChat.calls == 6 * 4
    written = _mtimes(out)
    (out / "field.gpkg").unlink()
    PixelChat.calls = 0
    assert detect_cmd.run(_args(inputs, out)) == 0
    assert PixelChat.calls == 4  # only field's windows
    again = _mtimes(out)
    assert {name for name in again if again[name] != written[name]} == {"field.gpkg"}
    assert not list(out.glob(".*.part.gpkg"))  # no temporary file left behind


def test_shards_in_turn_and_the_last_one_merges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = _scenes(tmp_path / "scenes")
    out = tmp_path / "out"
    _scripted_model(monkeypatch)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert scene_archive.env_shard({"RANK": "1", "WORLD_SIZE": "2"}) == (1, 2)
    assert detect_cmd.run(_args(inputs, out)) == 0  # shard 1/2 from the environment: 3 scenes
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["done"], manifest["pending"], manifest["merged"]) == (3, 3, None)
    assert not (out / "merged.gpkg").exists()
    monkeypatch.delenv("RANK")
    assert detect_cmd.run(_args(inputs, out, "--shard", "0/2")) == 0  # the last shard merges
    assert len(_features(out / "merged.gpkg")) == 6 * 4
    (out / "merged.gpkg").unlink()
    assert detect_cmd.run(_args(inputs, out, "--merge-only")) == 0
    assert len(_features(out / "merged.gpkg")) == 6 * 4


def test_scene_lists_globs_folders_and_names(tmp_path: Path) -> None:
    root = tmp_path / "scenes"
    inputs = _scenes(root)
    _geotiff(root / "s1_VV.tif", None, (0, 0), 1, 7)
    _geotiff(root / "s1_VH.tif", None, (0, 0), 1, 8)  # read as the VV scene's second band
    (root / "notes.txt").write_text("not a scene")
    scenes = scene_archive.expand_scenes([*inputs, str(root)])  # the folder repeats the glob's scenes
    assert [p.relative_to(root).as_posix() for p in scenes] == [
        "a/coast.tif", "b/coast.tif", "field.tif", "harbour.tif", "merged.tif", "photo.tif", "s1_VV.tif"]
    names = scene_archive.scene_names(scenes)
    assert names[2:] == ["field", "harbour", names[4], "photo", "s1_VV"]
    assert names[0] != names[1] and names[0].startswith("coast-") and names[4].startswith("merged-")
    assert scene_archive.is_archive([str(root)]) and scene_archive.is_archive(["x/*.tif"])
    assert not scene_archive.is_archive([str(root / "field.tif")])


@pytest.mark.parametrize(("extra", "message"), [
    (("--out", "boxes.gpkg"), "--out is a folder"),
    (("--processes", "2", "--shard", "0/2"), "--processes runs every shard itself"),
    (("--tile", "8"), "expected --tile >= 16"),
])
def test_bad_archive_input_exits_2_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str], extra: tuple[str, ...],
                                                message: str) -> None:
    monkeypatch.chdir(tmp_path)
    _scripted_model(monkeypatch)
    PixelChat.calls = 0
    assert detect_cmd.run(_args(_scenes(tmp_path / "scenes"), tmp_path / "out", *extra)) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and message in line
    assert PixelChat.calls == 0
    assert detect_cmd.run(_args([str(tmp_path / "empty" / "*.tif")], tmp_path / "out")) == 2
    assert "no scenes found" in capsys.readouterr().err


def test_merged_lonlat_layer_keeps_boxes_across_the_antimeridian_and_around_a_pole(tmp_path: Path) -> None:
    """Review of 2026-12-04: scenes in other CRSs were taken to EPSG:4326 vertex by vertex, so a
    box across 180° became 359° wide and a box around the North Pole had no area."""
    import shapely
    from pyproj import Transformer

    from earthgpt.geometry import HBB, Detection
    from earthgpt.gpkg_merge import merge_gpkgs
    from earthgpt.vector_export import write_gpkg

    scenes = {  # name: (CRS, transform origin and pixel, box in pixels)
        "dateline": ("EPSG:32660", (620_000, 7_000_000), 100, HBB(50, 50, 450, 350)),  # 63°N, 179.5°E–179.7°W
        "pole": ("EPSG:3413", (-100_000, 100_000), 1000, HBB(50, 50, 150, 150)),
    }
    parts = []
    for name, (crs, origin, pixel, box) in scenes.items():
        transform = from_origin(*origin, pixel, pixel)
        path = tmp_path / f"{name}.gpkg"
        write_gpkg(str(path), [Detection("ice", box)], [{}], crs=crs,
                   to_map=lambda pts, t=transform: [t @ p for p in pts])
        parts.append((name, path))
    assert merge_gpkgs(tmp_path / "merged.gpkg", parts)["crs"] == "EPSG:4326"
    meta, _, wkb, columns = pyogrio.raw.read(tmp_path / "merged.gpkg", layer="detections")
    merged = dict(zip(columns[list(meta["fields"]).index("scene")], shapely.from_wkb(wkb), strict=True))
    for name, (crs, origin, pixel, box) in scenes.items():
        polygon = merged[name]
        assert polygon.is_valid and polygon.exterior.is_ccw
        back = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform
        drawn = shapely.Polygon([back(x, y) for x, y in polygon.exterior.coords]).buffer(0)
        truth = shapely.Polygon([from_origin(*origin, pixel, pixel) @ p for p in box.corners()])
        assert drawn.symmetric_difference(truth).area < 0.01 * truth.area, name
    assert merged["dateline"].bounds[2] - merged["dateline"].bounds[0] < 1  # not 359°
    assert merged["pole"].bounds[3] == 90
