"""The model's input from an image file: uint8 (H, W, 3), made the same way by every reader (chat,
eval, training, ``earthgpt detect`` and the app).

One pipeline: the file's header and sensor once (:func:`model_source`: the sensor the user or the
record gives, else detected from the header and a 64-pixel overview), the bands to read
(:func:`plan_bands`), the VV → VH sibling of a single-band SAR file (:func:`find_sar_pair`), then a
decimated read of the whole image or of one window and :func:`earthgpt.sensors.to_model_rgb`.
An 8-bit picture file (JPEG, PNG: :attr:`RasterInfo.is_photo`) is shown as it is, the way the
training images were; rasters get the sensor's normalisation (percentile stretch, SAR dB).
Whole images (chat, eval, training) are read at most :data:`WHOLE_IMAGE_SIDE` pixels a side
(:func:`model_image`); windows (detect, the app) at the caller's size (:func:`load_for_model`,
:func:`window_reader`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from earthgpt.raster.files import RasterError, RasterInfo, inspect, overview_shape, read_overview, read_window
from earthgpt.raster.overview import quick_overview
from earthgpt.raster.tiling import Tile
from earthgpt.sensors import Sensor, alpha_band, detect_sensor, select_rgb_bands, to_model_rgb, valid_mask

WHOLE_IMAGE_SIDE = 1024
"""Longest side of a whole-image read (chat, eval, training); the processor resizes to the model's size."""
SENSOR_PROBE_SIDE = 64
"""Longest side of the overview whose pixels help detect the sensor (float data as linear backscatter)."""
SENSOR_PROBE_BLOCKS = 64
"""The probe of a big raster without overviews decodes at most this many blocks
(:func:`earthgpt.raster.overview.quick_overview`)."""

_POL_TOKEN = re.compile(r"(?<![a-z0-9])(vv|hh)(?![a-z0-9])", re.IGNORECASE)


class NodataWindowError(RasterError):
    """The window read holds only nodata: nothing to show the model."""


def _cross_pol(token: str) -> str:
    """``VV`` → ``VH``, ``hh`` → ``hv``, keeping the letters' case."""
    target = {"vv": "vh", "hh": "hv"}[token.lower()]
    return "".join(t.upper() if s.isupper() else t for s, t in zip(token, target, strict=True))


def find_sar_pair(path: str | Path) -> Path | None:
    """The cross-polarised sibling (VH of a VV file, HV of an HH file) in the same folder, if any.

    The file name must hold the polarisation as a separate token (``…_VV.tif`` → ``…_VH.tif``,
    ``s1a-iw-grd-vv-….tiff`` → ``…-vh-…``); the last such token is swapped.
    """
    path = Path(path)
    name = cross_pol_name(path.name)
    if name is None:
        return None
    sibling = path.with_name(name)
    return sibling if sibling.is_file() else None


def cross_pol_name(name: str) -> str | None:
    """The file name of a co-polarised SAR file's cross-polarised sibling (``…_VV.tif`` →
    ``…_VH.tif``, the last polarisation token swapped), or None when the name holds no VV/HH token."""
    matches = list(_POL_TOKEN.finditer(name))
    if not matches:
        return None
    last = matches[-1]
    return name[: last.start()] + _cross_pol(last.group(1)) + name[last.end() :]


def parse_band_numbers(text: str | None) -> tuple[int, ...] | None:
    """``"4,3,2"`` (or ``"4 3 2"``) → ``(4, 3, 2)``; empty → None (automatic choice). Raises
    ValueError unless it is 1 or 3 whole numbers: what ``--bands`` and the app's band box take."""
    if not text or not text.strip():
        return None
    try:
        bands = tuple(int(part) for part in text.replace(" ", ",").split(",") if part)
    except ValueError as err:
        raise ValueError(f"expected 1 or 3 band numbers like 4,3,2, got {text!r}") from err
    if len(bands) not in (1, 3):
        raise ValueError(f"expected 1 or 3 band numbers like 4,3,2, got {len(bands)} numbers in {text!r}")
    return bands


def plan_bands(
    info: RasterInfo, sensor: Sensor | str, bands: Sequence[int] | None = None
) -> tuple[list[int] | None, list[int] | None]:
    """Which bands to read (1-based; None: all) and the band choice within them (for
    :func:`earthgpt.sensors.to_model_rgb`'s ``bands``; None: automatic).

    Only the needed bands are read: the user's ``bands`` (1 or 3 of them); the RGB of an optical
    raster with more than three bands; the first band of an 8-bit SAR or infrared image with three
    or more (a grey image saved as RGB, as the SSDD JPEGs are). The alpha band, when there is one,
    comes along. Raises :class:`RasterError` for band numbers the raster does not have.
    """
    sensor, count = Sensor(sensor), info.count
    if bands:
        chosen = list(bands)
        if len(chosen) not in (1, 3) or not all(1 <= b <= count for b in chosen):
            raise RasterError(f"expected 1 or 3 band numbers between 1 and {count}, got {chosen}")
    elif sensor is Sensor.optical and count > 3:
        chosen = list(select_rgb_bands(info.descriptions, info.colorinterp, count))
    elif sensor is not Sensor.optical and count >= 3 and info.dtypes[0] == "uint8":
        chosen = [1]
    else:
        return None, None
    alpha = alpha_band(info.colorinterp)
    extra = [alpha] if alpha and alpha not in chosen else []
    return chosen + extra, list(range(1, len(chosen) + 1))


@dataclass(frozen=True)
class ModelSource:
    """What :func:`load_for_model` needs to know about a file once, not per window: its header,
    the sensor (and why) and the SAR sibling paired with it."""

    path: Path
    info: RasterInfo
    sensor: Sensor
    reason: str
    pair: Path | None


def model_source(path: str | Path, sensor: Sensor | str | None = None) -> ModelSource:
    """Inspect a file for :func:`load_for_model`: the header, the sensor (detected from the header
    and a :data:`SENSOR_PROBE_SIDE`-pixel overview only when not given) and the VH sibling of a
    single-band SAR file, which must match the file in size."""
    path = Path(path)
    info = inspect(path)
    if any(dtype.startswith("complex") for dtype in info.dtypes):
        raise RasterError(f"{path.name} holds complex pixels ({info.dtypes[0]}, a SAR SLC): "
                          "convert them to intensity |z|² first")
    if sensor is None:
        probe = quick_overview(path, SENSOR_PROBE_SIDE, max_blocks=SENSOR_PROBE_BLOCKS, background=False)
        chosen, reason = detect_sensor(info.count, info.dtypes[0], info.descriptions, info.tags,
                                       path.name, sample=probe.array.compressed())
    else:
        chosen, reason = Sensor(sensor), "chosen by the user"
    pair = find_sar_pair(path) if chosen is Sensor.sar and info.count == 1 else None
    if pair is not None:
        other = inspect(pair)
        if (other.width, other.height) != (info.width, info.height):
            raise RasterError(f"{pair.name} does not match {path.name} in size: cannot pair VV and VH")
    return ModelSource(path, info, chosen, reason, pair)


def _read(
    path: Path, window: Window | None, bands: list[int] | None, max_size: int, info: RasterInfo,
    quick: bool = False,
) -> tuple[np.ma.MaskedArray, tuple[float, float], Window, list[Future]]:
    """An overview (no window) or a window read no larger than ``max_size``, with its full-raster
    window and, for a ``quick`` preview, the background build of the exact overview."""
    if window is None:
        whole = Window(0, 0, info.width, info.height)
        if quick:
            found = quick_overview(path, max_size, bands)
            return found.array, found.scale, whole, [found.build] if found.build else []
        array, scale = read_overview(path, max_size=max_size, bands=bands)
        return array, scale, whole, []
    out = overview_shape(int(window.width), int(window.height), max_size)
    array, scale = read_window(path, int(window.col_off), int(window.row_off), int(window.width),
                               int(window.height), out_size=out, bands=bands)
    return array, scale, window, []


def _has_data(array: np.ma.MaskedArray, info: RasterInfo, bands: list[int]) -> bool:
    """Whether any pixel of a read holds data: not nodata, finite and not transparent (alpha 0)."""
    ok = valid_mask(array, nodata=info.nodata)
    alpha = alpha_band([info.colorinterp[b - 1] for b in bands])
    if alpha is not None:
        ok &= np.ma.getdata(array)[alpha - 1] != 0
    return bool(ok.any())


def _palette_rgb(array: np.ma.MaskedArray, palette: tuple[tuple[int, int, int], ...]) -> np.ma.MaskedArray:
    """One palette-coloured uint8 band (1, H, W) → its colours (3, H, W), nodata kept masked."""
    rgb = np.moveaxis(np.asarray(palette, dtype=np.uint8)[np.ma.getdata(array)[0]], -1, 0)
    return np.ma.MaskedArray(rgb, mask=np.repeat(np.ma.getmaskarray(array), 3, axis=0))


def load_for_model(
    path: str | Path,
    window: Window | None = None,
    sensor: Sensor | str | None = None,
    bands: Sequence[int] | None = None,
    max_size: int = 1024,
    source: ModelSource | None = None,
    quick: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read the whole image (as an overview) or one window, and make the model's uint8 (H, W, 3).

    The sensor is detected unless given. A single-band SAR file whose VH sibling exists
    (:func:`find_sar_pair`) becomes the VV/VH composite. Pass ``source`` (:func:`model_source`,
    made once) when reading many windows of one file, so the header, the sensor and the pair are
    not worked out again per window. ``meta`` holds the sensor, the reason, the window
    (full-raster pixels), the scale ``(sx, sy)``, the full ``size``, the bands read and the files
    used. A palette-coloured band (:attr:`RasterInfo.palette`) of an optical image is shown in its
    colours, as it is. ``quick`` (the whole image, for display: the app's overview) may give a
    preview of a big raster without overviews (:func:`earthgpt.raster.overview.quick_overview`);
    ``meta["overview_builds"]`` then holds the background builds of the exact pixels (empty when
    the pixels are exact), and the same call returns the exact image once they are done. Raises
    :class:`NodataWindowError` when the read holds only nodata (NaN, ±inf and transparent pixels
    count as nodata), :class:`RasterError` for a file or band choice that cannot be used,
    ValueError when the data do not fit the sensor.
    """
    path = Path(path)
    if source is None or source.path != path:
        source = model_source(path, sensor)
    info, pair = source.info, source.pair
    read_bands, override = plan_bands(info, source.sensor, bands)
    array, scale, window, builds = _read(path, window, read_bands, max_size, info, quick)
    subset = read_bands or list(range(1, info.count + 1))
    if builds and not _has_data(array, info, subset):  # the preview missed the data: wait for it all
        array, builds = builds[0].result(), []
    if not _has_data(array, info, subset):
        raise NodataWindowError("the window holds only nodata")
    vh = None
    if pair is not None:
        vh_array, _, _, vh_builds = _read(pair, window, None, max_size, info, quick)
        builds += vh_builds
        vh = np.ma.filled(vh_array[0].astype(np.float32), np.nan)
    descriptions = [info.descriptions[b - 1] for b in subset]
    colorinterp = [info.colorinterp[b - 1] for b in subset]
    photo = info.is_photo
    if info.palette is not None and source.sensor is Sensor.optical and not bands:
        array, photo = _palette_rgb(array, info.palette), True
        descriptions, colorinterp = [None] * 3, ["red", "green", "blue"]
    rgb = to_model_rgb(array, source.sensor, nodata=info.nodata, vh=vh, bands=override,
                       descriptions=descriptions, colorinterp=colorinterp, photo=photo)
    meta = {
        "path": str(path), "sensor": source.sensor, "reason": source.reason, "scale": scale,
        "window": (int(window.col_off), int(window.row_off), int(window.width), int(window.height)),
        "size": (info.width, info.height), "bands": subset, "pair": str(pair) if pair else None,
        "overview_builds": tuple(builds),
    }
    return rgb, meta


def model_image(
    path: str | Path, sensor: Sensor | str | None = None, bands: Sequence[int] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """The whole image as the model sees it in chat, eval and training: :func:`load_for_model`
    at most :data:`WHOLE_IMAGE_SIDE` pixels a side (the aspect kept, so 0–1000 grid boxes hold)."""
    return load_for_model(path, None, sensor=sensor, bands=bands, max_size=WHOLE_IMAGE_SIDE)


def window_reader(
    source: ModelSource, max_size: int, bands: Sequence[int] | None = None
) -> Callable[[Tile], np.ndarray | None]:
    """Whole-scene detection's reader (``earthgpt detect`` and the app): one tile as the model's RGB
    at most ``max_size`` pixels a side, None when it holds only nodata. The band choice is checked
    now, before any window is read."""
    plan_bands(source.info, source.sensor, bands)

    def read(tile: Tile) -> np.ndarray | None:
        window = Window(tile.col_off, tile.row_off, tile.width, tile.height)
        try:
            rgb, _ = load_for_model(source.path, window, bands=bands, max_size=max_size, source=source)
        except NodataWindowError:
            return None
        return rgb

    return read
