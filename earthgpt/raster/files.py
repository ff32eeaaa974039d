"""Raster files: open and check a file, read its header, read overviews and windows (never the whole
raster at full resolution).

Every image file goes through GDAL (GeoTIFF and other rasters, and PNG, JPEG, BMP, GIF, WebP too),
so a file is decoded the same way wherever it is read. Pixel windows are
``rasterio.windows.Window(col_off, row_off, width, height)`` in full-raster pixels. Band numbers are
1-based, as in rasterio. Reads return ``numpy.ma.MaskedArray`` of shape (bands, h, w) whose mask is
True on nodata (nodata value, internal mask or alpha), plus the scale ``(sx, sy)``: full-raster
pixels per returned pixel along x and y.
"""

from __future__ import annotations

import math
import os
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

MAX_BANDS = 16
"""More bands than this is a cube we cannot show or feed the model; pick bands with a tool first."""
MAX_SIDE = 1_000_000
MAX_PIXELS = 50_000_000_000
MAX_WINDOW_PIXELS = 8192 * 8192
"""A window read at full resolution may hold at most this many pixels; larger ones need ``out_size``."""
GDAL_CACHE_MB = 64
"""GDAL's block cache (default 5 % of RAM) is capped while we read: a decimated read of a big raster
touches every block, and without the cap the cache alone would grow to hundreds of MB."""
GDAL_OPTIONS = {"GDAL_CACHEMAX": GDAL_CACHE_MB * 2**20, "GDAL_ERROR_ON_LIBJPEG_WARNING": True}
"""The GDAL environment of every read: the capped cache (rasterio takes bytes), and libjpeg's
warnings as errors, since GDAL fills a JPEG's corrupt or missing scan data with grey after a warning."""


PHOTO_DRIVERS = frozenset({"JPEG", "PNG", "GIF", "BMP", "WEBP"})
"""Picture formats: an 8-bit file of one of these is a photo the model sees as it is (no stretch),
as every training image of the MMRS sources (AID, RSICD, RSVQA, HIT-UAV, SSDD, DOTA) was seen."""


class RasterError(ValueError):
    """A raster file we cannot use, with a message for the user."""


@dataclass(frozen=True)
class RasterInfo:
    """What readers need to know about a raster, read from its header only."""

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
    driver: str = ""
    """GDAL's short driver name (``GTiff``, ``JPEG``, ``PNG``, …)."""
    palette: tuple[tuple[int, int, int], ...] | None = None
    """The RGB colour of each of the 256 values of a single uint8 band coloured by a palette (a GIF, a
    classified map); None otherwise."""

    @property
    def is_photo(self) -> bool:
        """An 8-bit picture file (JPEG, PNG, …), not a measurement: its pixels are shown as they are."""
        return self.driver in PHOTO_DRIVERS and all(dtype == "uint8" for dtype in self.dtypes)

    @property
    def affine(self) -> rasterio.Affine:
        """The pixel → map transform as an ``affine.Affine`` (for rasterio's helpers)."""
        return rasterio.Affine(*self.transform)


@contextmanager
def open_raster(path: str | Path) -> Iterator[rasterio.DatasetReader]:
    """Open a raster inside the GDAL environment :data:`GDAL_OPTIONS`; raise :class:`RasterError`
    for a missing or unreadable file (a truncated PNG too)."""
    path = Path(path)
    if not path.is_file():
        raise RasterError(f"no such file: {path}")
    with rasterio.Env(**GDAL_OPTIONS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                src = rasterio.open(path)
        except RasterioError as err:
            raise RasterError(
                f"{path.name} is not a raster GDAL can read (corrupt or unsupported format): {err}"
            ) from err
        with src:
            if src.driver == "PNG" and _png_truncated(path):
                raise RasterError(f"{path.name} is a truncated PNG: the file ends before its last chunk")
            yield src


def _png_truncated(path: Path) -> bool:
    """Whether a PNG file ends before its ``IEND`` chunk. GDAL reads such a file without an error
    and fills the missing rows with whatever was in memory, so it is checked here (chunk headers
    only, the pixel data is skipped)."""
    with path.open("rb") as png:
        png.seek(8)  # the signature
        while len(header := png.read(8)) == 8:
            length, kind = struct.unpack(">I4s", header)
            if kind == b"IEND":
                return False
            png.seek(length + 4, os.SEEK_CUR)  # the data and its CRC
    return True


def _crs_text(crs: rasterio.crs.CRS | None) -> str | None:
    return None if crs is None else crs.to_string()


@contextmanager
def _reading(path: str | Path) -> Iterator[None]:
    """Turn GDAL read failures (truncated or corrupt pixel data) into :class:`RasterError`."""
    try:
        yield
    except RasterioError as err:
        name = Path(path).name
        why = str(err.__cause__ or err).rstrip(".")  # rasterio's own message only points at GDAL's
        raise RasterError(f"could not read the pixels of {name} (truncated or corrupt?): {why}") from err


def inspect(path: str | Path, max_bands: int = MAX_BANDS) -> RasterInfo:
    """Read a raster's header into a :class:`RasterInfo`; raise :class:`RasterError` if unusable."""
    with open_raster(path) as src:
        if src.width == 0 or src.height == 0 or src.count == 0:
            raise RasterError(
                f"{Path(path).name} is empty: {src.width}×{src.height} pixels, {src.count} bands"
            )
        if src.width > MAX_SIDE or src.height > MAX_SIDE:
            raise RasterError(
                f"{Path(path).name} is {src.width:,}×{src.height:,} pixels; at most {MAX_SIDE:,} per side "
                "are supported"
            )
        if src.width * src.height > MAX_PIXELS:
            total = src.width * src.height / 1e9
            raise RasterError(
                f"{Path(path).name} is {src.width:,}×{src.height:,} pixels, {total:,.1f} billion in all; "
                f"at most {MAX_PIXELS / 1e9:,.0f} billion are supported"
            )
        if src.count > max_bands:
            raise RasterError(
                f"{Path(path).name} has {src.count} bands; at most {max_bands} are supported: "
                "extract the bands you need first (e.g. gdal_translate -b)"
            )
        gcps, gcps_crs = src.gcps
        coloured = src.count == 1 and src.dtypes[0] == "uint8" and src.colorinterp[0] is ColorInterp.palette
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
            driver=src.driver,
            palette=_palette(src.colormap(1)) if coloured else None,
        )


def _palette(colormap: dict[int, tuple[int, ...]]) -> tuple[tuple[int, int, int], ...]:
    """GDAL's colour table (value → RGBA) as the RGB of each of the 256 values (black if missing)."""
    return tuple(tuple(colormap.get(value, (0, 0, 0))[:3]) for value in range(256))  # type: ignore[misc]


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
    with open_raster(path) as src:
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
    with open_raster(path) as src:
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
