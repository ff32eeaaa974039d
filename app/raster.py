"""Raster I/O for the app: inspect a file, read overviews and windows (never the whole raster at
full resolution), tile a scene, and turn a read into the model's 8-bit RGB.

Pixel windows are ``rasterio.windows.Window(col_off, row_off, width, height)`` in full-raster
pixels. Band numbers are 1-based, as in rasterio. Reads return ``numpy.ma.MaskedArray`` of shape
(bands, h, w) whose mask is True on nodata (nodata value, internal mask or alpha), plus the scale
``(sx, sy)``: full-raster pixels per returned pixel along x and y.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from earthgpt.rasterio_io import find_sar_pair, plan_bands
from earthgpt.sensors import Sensor, detect_sensor, to_model_rgb

__all__ = [
    "ModelSource", "RasterError", "RasterInfo", "demo_tiles", "find_sar_pair", "inspect", "load_for_model",
    "model_source", "overview_shape", "read_overview", "read_window", "window_grid",
]

MAX_BANDS = 16
"""More bands than this is a cube the app cannot show; pick bands with a tool first."""
MAX_SIDE = 1_000_000
MAX_PIXELS = 50_000_000_000
MAX_WINDOW_PIXELS = 8192 * 8192
"""A window read at full resolution may hold at most this many pixels; larger ones need ``out_size``."""
GDAL_CACHE_MB = 64
"""GDAL's block cache (default 5 % of RAM) is capped while we read: a decimated read of a big raster
touches every block, and without the cap the cache alone would grow to hundreds of MB."""
DEMO_DIR = Path(__file__).resolve().parents[1] / "assets" / "demo"


class RasterError(ValueError):
    """A raster the app cannot use, with a message for the user."""


@dataclass(frozen=True)
class RasterInfo:
    """What the app needs to know about a raster, read from its header only."""

    path: str
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    crs: str | None
    """``"EPSG:nnnn"`` when the CRS has an EPSG code, else its WKT; None when there is none."""
    transform: tuple[float, ...]
    """The affine pixel → map transform as the 6 coefficients ``(a, b, c, d, e, f)``."""
    nodata: float | None
    descriptions: tuple[str | None, ...]
    colorinterp: tuple[str, ...]
    overviews: tuple[int, ...]
    georeferenced: bool
    tags: dict[str, str] = field(default_factory=dict)
    gcps: tuple[Any, ...] = ()
    """Ground control points (rasterio ``GroundControlPoint``) when the raster has them."""
    gcps_crs: str | None = None

    @property
    def affine(self) -> rasterio.Affine:
        """The pixel → map transform as an ``affine.Affine`` (for rasterio's helpers)."""
        return rasterio.Affine(*self.transform)


@contextmanager
def _open(path: str | Path) -> Iterator[rasterio.DatasetReader]:
    """Open a raster inside a GDAL environment whose block cache is capped at ``GDAL_CACHE_MB``."""
    path = Path(path)
    if not path.is_file():
        raise RasterError(f"no such file: {path}")
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20):  # rasterio takes bytes
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                src = rasterio.open(path)
        except RasterioError as err:
            raise RasterError(
                f"{path.name} is not a raster GDAL can read (corrupt or unsupported format): {err}"
            ) from err
        with src:
            yield src


def _crs_text(crs: rasterio.crs.CRS | None) -> str | None:
    return None if crs is None else crs.to_string()


@contextmanager
def _reading(path: str | Path) -> Iterator[None]:
    """Turn GDAL read failures (truncated or corrupt pixel data) into :class:`RasterError`."""
    try:
        yield
    except RasterioError as err:
        name = Path(path).name
        raise RasterError(f"could not read the pixels of {name} (truncated or corrupt?): {err}") from err


def inspect(path: str | Path, max_bands: int = MAX_BANDS) -> RasterInfo:
    """Read a raster's header into a :class:`RasterInfo`; raise :class:`RasterError` if unusable."""
    with _open(path) as src:
        if src.width == 0 or src.height == 0 or src.count == 0:
            raise RasterError(
                f"{Path(path).name} is empty: {src.width}×{src.height} pixels, {src.count} bands"
            )
        if src.width > MAX_SIDE or src.height > MAX_SIDE or src.width * src.height > MAX_PIXELS:
            raise RasterError(
                f"{Path(path).name} is {src.width}×{src.height} pixels; at most {MAX_SIDE} per side and "
                f"{MAX_PIXELS:.0e} in all are supported"
            )
        if src.count > max_bands:
            raise RasterError(
                f"{Path(path).name} has {src.count} bands; the app shows at most {max_bands}: "
                "extract the bands you need first (e.g. gdal_translate -b)"
            )
        gcps, gcps_crs = src.gcps
        has_transform = src.transform != rasterio.Affine.identity()
        return RasterInfo(
            path=str(path),
            width=src.width,
            height=src.height,
            count=src.count,
            dtypes=tuple(src.dtypes),
            crs=_crs_text(src.crs),
            transform=tuple(src.transform)[:6],
            nodata=src.nodata,
            descriptions=tuple(src.descriptions),
            colorinterp=tuple(ci.name for ci in src.colorinterp),
            overviews=tuple(src.overviews(1)),
            georeferenced=bool((src.crs is not None and has_transform) or (gcps and gcps_crs is not None)),
            tags=dict(src.tags()),
            gcps=tuple(gcps),
            gcps_crs=_crs_text(gcps_crs),
        )


def _indexes(src: rasterio.DatasetReader, bands: list[int] | tuple[int, ...] | None) -> list[int]:
    indexes = list(bands) if bands else list(range(1, src.count + 1))
    bad = [b for b in indexes if not 1 <= b <= src.count]
    if bad:
        raise RasterError(f"band numbers must be between 1 and {src.count}, got {bad}")
    return indexes


def overview_shape(width: int, height: int, max_size: int) -> tuple[int, int]:
    """(out_width, out_height) with the longer side at most ``max_size``, aspect kept."""
    if max_size < 1:
        raise ValueError(f"max_size must be a positive number of pixels, got {max_size}")
    factor = max(1.0, max(width, height) / max_size)
    return max(1, round(width / factor)), max(1, round(height / factor))


def read_overview(
    path: str | Path, max_size: int = 1024, bands: list[int] | tuple[int, ...] | None = None
) -> tuple[np.ma.MaskedArray, tuple[float, float]]:
    """The whole raster decimated so its longer side is at most ``max_size`` pixels.

    GDAL serves the read from the internal (or .ovr) overviews when there are any, otherwise it
    samples the full-resolution blocks (nearest neighbour); the full raster is never held in memory.
    """
    with _open(path) as src:
        out_w, out_h = overview_shape(src.width, src.height, max_size)
        indexes = _indexes(src, bands)
        with _reading(path):
            array = src.read(indexes, out_shape=(len(indexes), out_h, out_w), masked=True)
        return array, (src.width / out_w, src.height / out_h)


def read_window(
    path: str | Path,
    col_off: int,
    row_off: int,
    width: int,
    height: int,
    out_size: tuple[int, int] | None = None,
    bands: list[int] | tuple[int, ...] | None = None,
) -> tuple[np.ma.MaskedArray, tuple[float, float]]:
    """Read one window (full-raster pixels), resampled to ``out_size = (width, height)`` if given.

    Parts of the window outside the raster are filled with nodata and masked (boundless read).
    """
    if width < 1 or height < 1:
        raise RasterError(f"a window needs a positive size, got {width}×{height}")
    out_w, out_h = out_size or (width, height)
    if out_w * out_h > MAX_WINDOW_PIXELS:
        raise RasterError(f"a {out_w}×{out_h} read is too large; pass a smaller out_size")
    window = Window(col_off, row_off, width, height)
    with _open(path) as src:
        indexes = _indexes(src, bands)
        inside = (col_off >= 0 and row_off >= 0
                  and col_off + width <= src.width and row_off + height <= src.height)
        fill = src.nodata if src.nodata is not None and not math.isnan(src.nodata) else 0
        with _reading(path):
            array = src.read(
                indexes, window=window, out_shape=(len(indexes), out_h, out_w), masked=True,
                boundless=not inside, fill_value=fill if not inside else None,
            )
        return array, (width / out_w, height / out_h)


def window_grid(width: int, height: int, tile: int, overlap: int = 0) -> list[Window]:
    """Windows of ``tile``×``tile`` pixels covering a ``width``×``height`` raster.

    Neighbours overlap by at least ``overlap`` pixels. The last row and column of tiles are shifted
    inward to end at the raster's edge (they overlap their neighbours more) rather than padded, so
    every tile holds only real pixels; a raster smaller than ``tile`` gives one window of its size.
    """
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"expected tile >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")

    def starts(size: int) -> list[int]:
        if size <= tile:
            return [0]
        offsets = list(range(0, size - tile, tile - overlap))
        return [*offsets, size - tile]

    return [
        Window(col, row, min(tile, width), min(tile, height))
        for row in starts(height)
        for col in starts(width)
    ]


def _plan_bands(
    info: RasterInfo, sensor: Sensor, bands: list[int] | tuple[int, ...] | None
) -> tuple[list[int] | None, list[int] | None]:
    """Which bands to read (None: all) and the band choice within them (1-based, None: automatic);
    :func:`earthgpt.rasterio_io.plan_bands`, the CLI's plan too."""
    try:
        return plan_bands(sensor, info.count, info.descriptions, info.colorinterp, bands)
    except ValueError as err:
        raise RasterError(str(err)) from err


def _valid(array: np.ma.MaskedArray) -> np.ndarray:
    return ~np.ma.getmaskarray(array).all(axis=0)


def _read(
    path: Path, window: Window | None, bands: list[int] | None, max_size: int, info: RasterInfo
) -> tuple[np.ma.MaskedArray, tuple[float, float], Window]:
    """An overview (no window) or a window read no larger than ``max_size``, with its full-raster window."""
    if window is None:
        array, scale = read_overview(path, max_size=max_size, bands=bands)
        return array, scale, Window(0, 0, info.width, info.height)
    out = overview_shape(int(window.width), int(window.height), max_size)
    array, scale = read_window(path, int(window.col_off), int(window.row_off), int(window.width),
                               int(window.height), out_size=out, bands=bands)
    return array, scale, window


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
    and a 64-pixel overview only when not given) and the VH sibling of a single-band SAR file."""
    path = Path(path)
    info = inspect(path)
    if sensor is None:
        probe, _ = read_overview(path, max_size=64)
        chosen, reason = detect_sensor(info.count, info.dtypes[0], info.descriptions, info.tags,
                                       path.name, sample=probe.compressed())
    else:
        chosen, reason = Sensor(sensor), "chosen by the user"
    pair = find_sar_pair(path) if chosen is Sensor.sar and info.count == 1 else None
    return ModelSource(path, info, chosen, reason, pair)


def load_for_model(
    path: str | Path,
    window: Window | None = None,
    sensor: Sensor | str | None = None,
    bands: list[int] | tuple[int, ...] | None = None,
    max_size: int = 1024,
    source: ModelSource | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read the whole raster (as an overview) or one window, and make the model's uint8 (H, W, 3).

    The sensor is detected unless given. A single-band SAR file whose VH sibling exists
    (:func:`find_sar_pair`) becomes the VV/VH composite. Pass ``source`` (:func:`model_source`,
    made once) when reading many windows of one file, so the header, the sensor and the pair are
    not worked out again per window. ``meta`` holds the sensor, the reason, the window
    (full-raster pixels), the scale ``(sx, sy)``, the bands read and the files used.
    """
    path = Path(path)
    if source is None or source.path != path:
        source = model_source(path, sensor)
    info, pair = source.info, source.pair
    read_bands, override = _plan_bands(info, source.sensor, bands)
    array, scale, window = _read(path, window, read_bands, max_size, info)
    if not _valid(array).any():
        raise RasterError("the window holds only nodata")
    vh = None
    if pair is not None:
        vh_array, _, _ = _read(pair, window, None, max_size, info)
        if vh_array.shape[1:] != array.shape[1:]:
            raise RasterError(f"{pair.name} does not match {path.name} in size: cannot pair VV and VH")
        vh = np.ma.filled(vh_array[0].astype(np.float32), np.nan)
    subset = read_bands or list(range(1, info.count + 1))
    rgb = to_model_rgb(
        array, source.sensor, nodata=info.nodata, vh=vh, bands=override,
        descriptions=[info.descriptions[b - 1] for b in subset],
        colorinterp=[info.colorinterp[b - 1] for b in subset],
    )
    meta = {
        "path": str(path), "sensor": source.sensor, "reason": source.reason, "scale": scale,
        "window": (int(window.col_off), int(window.row_off), int(window.width), int(window.height)),
        "bands": read_bands or list(range(1, info.count + 1)), "pair": str(pair) if pair else None,
    }
    return rgb, meta


@dataclass(frozen=True)
class DemoTile:
    """A bundled demo image: its file(s) (a SAR VV file first, then its VH), sensor and description."""

    paths: tuple[Path, ...]
    sensor: Sensor
    description: str


def demo_tiles() -> dict[str, DemoTile]:
    """The demo tiles shipped in ``assets/demo`` (see its README for sources and licences)."""
    sar = "OPERA_L2_RTC-S1_T137-292318-IW1_20250102T015857Z_20250102T190143Z_S1A_30_v1.0_{}.tif"
    return {
        "optical-landsat": DemoTile((DEMO_DIR / "RGB.byte.tif",), Sensor.optical,
                                    "Landsat 7 RGB, 791×718 at 300 m, EPSG:32618 (rasterio test data)"),
        "sar-sentinel1": DemoTile((DEMO_DIR / sar.format("VV"), DEMO_DIR / sar.format("VH")), Sensor.sar,
                                  "Sentinel-1 OPERA RTC γ0, VV + VH, 100×100 at 30 m, EPSG:32611"),
        "infrared-hituav": DemoTile((DEMO_DIR / "hit_uav_0_100_70_0_08234.jpg",), Sensor.infrared,
                                    "HIT-UAV thermal drone frame, 640×512, not georeferenced"),
    }
