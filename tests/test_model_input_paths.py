"""The model sees the same pixels whichever way an image comes in: ``earthgpt chat``, evaluation (the
predictor's image read), the training dataset, ``earthgpt detect`` (one window over the whole small
image) and the app (``handlers.load_image``'s first window). Compared are the uint8 arrays given to
the model, before the processor resizes them.

Files: an optical GeoTIFF with 4 bands, the bundled Sentinel-1 VV tile (with its VH sibling: the
VV/VH composite everywhere), the bundled infrared JPEG and a PNG (pictures: shown as they are), and a
13-band cube. Chat, eval and training
records cannot name bands, so they read the cube with the automatic choice (4, 3, 2 for 13 bands)
while detect and the app are given ``--bands 4,3,2``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from app import handlers as H
from app.demo_tiles import demo_tiles
from app.session_io import Session
from earthgpt.commands import chat as chat_cmd
from earthgpt.commands import detect as detect_cmd
from earthgpt.data.torch_dataset import MMRSTorchDataset
from earthgpt.eval.predictor import read_rgb
from earthgpt.raster import inspect
from earthgpt.sensors import Sensor

Bands = tuple[int, ...] | None


def _write(path: Path, data: np.ndarray, descriptions: tuple[str, ...] = ()) -> Path:
    with rasterio.open(path, "w", driver="GTiff", count=data.shape[0], height=data.shape[1],
                       width=data.shape[2], dtype=data.dtype.name, crs="EPSG:32633",
                       transform=from_origin(500000, 4000000, 10, 10)) as dst:
        dst.write(data)
        for number, text in enumerate(descriptions, start=1):
            dst.set_band_description(number, text)
    return path


def _optical(folder: Path) -> Path:
    data = np.random.default_rng(0).integers(100, 3000, (4, 48, 64), dtype=np.uint16)
    return _write(folder / "optical_4band.tif", data, ("blue", "green", "red", "nir"))


def _cube(folder: Path) -> Path:
    return _write(folder / "s2_cube.tif", np.random.default_rng(1).integers(0, 10000, (13, 40, 56),
                                                                            dtype=np.uint16))


def _chat(path: Path, sensor: str | None, _bands: Bands) -> np.ndarray:
    return chat_cmd.read_image(path, sensor)[0]


def _eval(path: Path, sensor: str | None, _bands: Bands) -> np.ndarray:
    return read_rgb(path, sensor)


def _training(path: Path, sensor: str | None, _bands: Bands) -> np.ndarray:
    dataset = MMRSTorchDataset([], [], processor=None, resolve_image=lambda record: path, max_length=1)
    return dataset.read_image(path, sensor)


class _Recording:
    """A stand-in chat that keeps the image it is shown and answers nothing."""

    def __init__(self, seen: list[np.ndarray]) -> None:
        self.seen = seen

    def set_image(self, rgb: np.ndarray) -> None:
        self.seen.append(rgb)

    def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False, **options: object) -> str:
        return ""


def _detect(path: Path, sensor: str | None, bands: Bands) -> np.ndarray:
    info = inspect(path)
    side = max(info.width, info.height)
    parser = argparse.ArgumentParser()
    detect_cmd.add_arguments(parser)
    argv = [str(path), "--out", str(path.with_suffix(".geojson")), "--tile", str(side), "--overlap", "0"]
    argv += ["--sensor", sensor] if sensor else []
    argv += ["--bands", ",".join(map(str, bands))] if bands else []
    seen: list[np.ndarray] = []
    result, _ = detect_cmd.detect_file(parser.parse_args(argv), lambda s: _Recording(seen), "scripted")
    assert result.tiles == 1
    (rgb,) = seen
    return rgb


def _app(path: Path, sensor: str | None, bands: Bands) -> np.ndarray:
    session = H.load_image(Session(), path, sensor=sensor, bands=bands)
    assert session.window == (0, 0, session.info.width, session.info.height)
    return session.model_image


PATHS: dict[str, Callable[[Path, str | None, Bands], np.ndarray]] = {
    "chat": _chat, "eval": _eval, "training": _training, "detect": _detect, "app": _app,
}


def _inputs(path: Path, sensor: str | None, bands: Bands = None) -> dict[str, np.ndarray]:
    """The model input of every path; chat, eval and training never get ``bands``."""
    return {name: read(path, sensor, bands if name in ("detect", "app") else None)
            for name, read in PATHS.items()}


def _assert_identical(inputs: dict[str, np.ndarray]) -> np.ndarray:
    reference = inputs["app"]
    assert reference.dtype == np.uint8 and reference.ndim == 3 and reference.shape[2] == 3
    for name, rgb in inputs.items():
        assert np.array_equal(rgb, reference), f"{name} differs from the app"
    return reference


@pytest.mark.parametrize("sensor", [None, "optical"])
def test_optical_geotiff_with_four_bands(tmp_path: Path, sensor: str | None) -> None:
    rgb = _assert_identical(_inputs(_optical(tmp_path), sensor))
    assert rgb.shape == (48, 64, 3) and len(np.unique(rgb)) > 100


@pytest.mark.parametrize("sensor", [None, "sar"])
def test_sentinel1_vv_with_its_vh_sibling_is_the_composite_everywhere(sensor: str | None) -> None:
    vv, vh = demo_tiles()["sar-sentinel1"].paths
    assert vh.is_file()
    rgb = _assert_identical(_inputs(vv, sensor))
    assert rgb.shape == (100, 100, 3)
    assert not np.array_equal(rgb[..., 0], rgb[..., 1])  # VV, VH, VV−VH: not a grey VV


@pytest.mark.parametrize("sensor", [None, "infrared"])
def test_infrared_jpeg(sensor: str | None) -> None:
    (jpeg,) = demo_tiles()["infrared-hituav"].paths
    rgb = _assert_identical(_inputs(jpeg, sensor))
    assert rgb.shape == (512, 640, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    # a picture file is shown as it is, as the training images were: no percentile stretch
    with Image.open(jpeg) as image:
        assert np.array_equal(rgb, np.asarray(image.convert("RGB")))


def test_png_photo_is_shown_as_it_is(tmp_path: Path) -> None:
    pixels = np.random.default_rng(2).integers(90, 140, (40, 52, 3), dtype=np.uint8)  # low contrast
    png = tmp_path / "photo.png"
    Image.fromarray(pixels).save(png)
    assert np.array_equal(_assert_identical(_inputs(png, None)), pixels)


def test_thirteen_band_cube_with_bands_4_3_2(tmp_path: Path) -> None:
    cube = _cube(tmp_path)
    rgb = _assert_identical(_inputs(cube, Sensor.optical.value, bands=(4, 3, 2)))
    chosen = _detect(cube, Sensor.optical.value, (1, 2, 3))
    assert np.array_equal(chosen, _app(cube, Sensor.optical.value, (1, 2, 3)))
    assert not np.array_equal(chosen, rgb)  # the bands matter, and both paths follow them
