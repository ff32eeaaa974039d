"""``earthgpt detect`` against the app: the same pixel → lon/lat mapping (GCP rasters too), clear
failures with exit status 2, the VV → VH pairing and ``--bands``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from app import handlers as H
from app.export import session_geojson
from app.session_io import Found, Session
from earthgpt.commands import detect as detect_cmd


class OneShip:
    """Answers one ship over the middle of whatever tile it is shown."""

    def set_image(self, rgb: np.ndarray) -> None:
        self.image = rgb

    def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False, **options: object) -> str:
        return "ship [250, 250, 750, 750]"


SMALL = ("--sensor", "optical", "--tile", "64", "--overlap", "0")


def _args(image: Path, out: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    detect_cmd.add_arguments(parser)
    return parser.parse_args([str(image), "--out", str(out), *extra])


def test_cli_and_app_export_a_gcp_raster_in_the_same_lonlat(fixtures_dir: Path, tmp_path: Path) -> None:
    image = fixtures_dir / "gcps.tif"
    out = tmp_path / "gcps.geojson"
    result, _ = detect_cmd.detect_file(_args(image, out, *SMALL),
                                       lambda s: OneShip(), "scripted")
    cli = json.loads(out.read_text())
    assert "note" not in cli and len(cli["features"]) == 1
    ring = cli["features"][0]["geometry"]["coordinates"][0]
    assert all(12.3 < lon < 12.6 and 41.8 < lat < 42.0 for lon, lat in ring)  # lon/lat, not pixels
    session = H.load_image(Session(), image, sensor="optical")
    session = Session(**{**session.__dict__, "found": [Found(result.detections[0], "p", None, "scene")]})
    app = session_geojson(session, "scripted")
    assert app["features"][0]["geometry"]["coordinates"] == cli["features"][0]["geometry"]["coordinates"]


def test_cli_gpkg_of_a_gcp_raster_is_in_the_gcp_crs(fixtures_dir: Path, tmp_path: Path) -> None:
    import pyogrio

    out = tmp_path / "gcps.gpkg"
    detect_cmd.detect_file(_args(fixtures_dir / "gcps.tif", out, *SMALL),
                           lambda s: OneShip(), "scripted")
    info = pyogrio.read_info(out)
    assert info["crs"] == "EPSG:4326"
    west, south, east, north = info["total_bounds"]
    assert 12.4 < west < east < 12.53 and 41.86 < south < north < 41.96


class Recording(OneShip):
    """Keeps every image it is shown."""

    seen: ClassVar[list[np.ndarray]] = []

    def set_image(self, rgb: np.ndarray) -> None:
        Recording.seen.append(rgb)


def _model_images(args: argparse.Namespace) -> list[np.ndarray]:
    Recording.seen = []
    detect_cmd.detect_file(args, lambda s: Recording(), "scripted")
    return Recording.seen


def test_cli_pairs_vv_with_vh_like_the_app(tmp_path: Path) -> None:
    from rasterio.windows import Window

    from app.demo_tiles import demo_tiles
    from earthgpt.raster import load_for_model

    vv, _vh = demo_tiles()["sar-sentinel1"].paths
    (image,) = _model_images(_args(vv, tmp_path / "sar.geojson", "--sensor", "sar", "--tile", "100",
                                   "--overlap", "0"))
    app_rgb, meta = load_for_model(vv, Window(0, 0, 100, 100), sensor="sar", max_size=100)
    assert meta["pair"] is not None
    assert not np.array_equal(image[..., 0], image[..., 1])  # a VV/VH composite, not grey VV
    np.testing.assert_array_equal(image, app_rgb)


def test_cli_bands_choose_what_the_model_sees(tmp_path: Path) -> None:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from earthgpt.raster import load_for_model

    path = tmp_path / "four.tif"
    data = np.random.default_rng(3).integers(1, 4000, (4, 60, 80), dtype=np.uint16)
    with rasterio.open(path, "w", driver="GTiff", count=4, width=80, height=60, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(500000, 4000000, 10, 10)) as dst:
        dst.write(data)
    common = ("--sensor", "optical", "--tile", "80", "--overlap", "0")
    (chosen,) = _model_images(_args(path, tmp_path / "a.geojson", *common, "--bands", "4,3,2"))
    (auto,) = _model_images(_args(path, tmp_path / "b.geojson", *common))
    app_rgb, _ = load_for_model(path, Window(0, 0, 80, 60), sensor="optical", bands=[4, 3, 2], max_size=80)
    np.testing.assert_array_equal(chosen, app_rgb)
    assert not np.array_equal(chosen, auto)
    with pytest.raises(SystemExit):
        _args(path, tmp_path / "c.geojson", "--bands", "4,3")
    with pytest.raises(ValueError, match="band numbers"):
        detect_cmd.detect_file(_args(path, tmp_path / "c.geojson", *common, "--bands", "9,3,2"),
                               lambda s: OneShip(), "scripted")


def _fake_model(monkeypatch: pytest.MonkeyPatch, error: BaseException | None = None) -> list[str]:
    """``load_model`` replaced: raises ``error``, or returns a stand-in whose chats answer one ship."""
    import earthgpt.inference

    loaded: list[str] = []

    def load_model(name: str, **_: object) -> tuple[object, object]:
        if error is not None:
            raise error
        loaded.append(name)
        return object(), object()

    monkeypatch.setattr(earthgpt.inference, "load_model", load_model)
    monkeypatch.setattr(earthgpt.inference, "ChatSession", lambda *a, **k: OneShip())
    monkeypatch.setattr(earthgpt.inference, "is_untrained_start", lambda name: False)
    return loaded


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("detect:")]
    assert len(err) == 1 and err[0].startswith("error: "), err  # one line (the progress bar aside)
    return err[0]


@pytest.mark.parametrize("error", [FileNotFoundError("no model called 'nanoo'"),
                                   ImportError("bitsandbytes is not installed")])
def test_cli_model_that_cannot_load_exits_2(tmp_path: Path, fixtures_dir: Path, error: BaseException,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    _fake_model(monkeypatch, error)
    args = _args(fixtures_dir / "rotated.tif", tmp_path / "out.geojson", "--model", "nanoo")
    assert detect_cmd.run(args) == 2
    assert str(error) in _one_line_error(capsys)


def test_cli_truncated_tiff_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    import rasterio

    whole = tmp_path / "whole.tif"
    data = np.random.default_rng(0).integers(0, 255, (3, 256, 256), dtype=np.uint8)
    with rasterio.open(whole, "w", driver="GTiff", count=3, width=256, height=256, dtype="uint8",
                       compress="deflate") as dst:
        dst.write(data)
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    _fake_model(monkeypatch)
    assert detect_cmd.run(_args(truncated, tmp_path / "out.geojson", *SMALL)) == 2
    assert "could not read the pixels of truncated.tif" in _one_line_error(capsys)


def test_cli_missing_output_folder_fails_before_any_work(tmp_path: Path, fixtures_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    _fake_model(monkeypatch)
    asked: list[object] = []
    args = _args(fixtures_dir / "rotated.tif", tmp_path / "no" / "such" / "out.geojson", *SMALL)
    with pytest.raises(ValueError, match="does not exist"):
        detect_cmd.detect_file(args, lambda s: asked.append(s), "scripted")
    assert asked == []
    assert detect_cmd.run(args) == 2
    assert "does not exist" in _one_line_error(capsys)


def test_cli_warns_about_an_untrained_start(tmp_path: Path, fixtures_dir: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import earthgpt.inference
    from earthgpt.inference import UNTRAINED_WARNING

    _fake_model(monkeypatch)
    monkeypatch.setattr(earthgpt.inference, "is_untrained_start", lambda name: name == "nano")
    assert detect_cmd.run(_args(fixtures_dir / "rotated.tif", tmp_path / "a.geojson", *SMALL)) == 0
    assert f"WARNING: {UNTRAINED_WARNING}" in capsys.readouterr().err
    args = _args(fixtures_dir / "rotated.tif", tmp_path / "b.geojson", *SMALL, "--model", "checkpoint")
    assert detect_cmd.run(args) == 0
    assert "WARNING" not in capsys.readouterr().err
