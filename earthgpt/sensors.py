"""Optical, SAR and infrared rasters → the 8-bit RGB the model sees (numpy only, no GDAL).

Arrays are band-first, ``(bands, height, width)``, as rasterio reads them; a 2-D array is one band.
``valid`` masks are ``(height, width)`` booleans, True where the pixel holds data. Pixels that are
nodata, NaN or ±inf never enter the statistics and are rendered 0 (black).

Band numbers (``bands=``, :func:`select_rgb_bands`) are **1-based**, as in GDAL and rasterio.

Choices, per sensor:

- **Optical**: RGB bands from band descriptions, then colour interpretation, then Sentinel-2 /
  Landsat 8-9 names (``B04``, ``B4`` = red), then a 13-band Sentinel-2 L1C stack (B1..B12 with B8A:
  red, green, blue = bands 4, 3, 2), else the first three bands; a 2–98 percentile stretch per band.
- **SAR**: linear backscatter (σ0/γ0 power) → dB = 10·log10; zero or negative power (noise
  subtraction) becomes ``floor_db``. Each channel is scaled with a **fixed** dB range, not per-image
  percentiles, so tiles of one scene stay comparable: VV −25..+5 dB, VH −35..−5 dB and VV−VH
  0..+20 dB (the 2nd–98th percentiles of the OPERA RTC γ0 tiles in our data are VV −24..−6 dB,
  VH −35..−12 dB). Amplitude images already in 8 bit (SSDD JPEGs) pass through as grey.
- **Infrared**: one band, 8 or 16 bit, percentile stretch, the same grey in all three channels
  for the model; :func:`colormap_display` paints it with an inferno-like map for people only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum

import numpy as np


class Sensor(StrEnum):
    """The imaging modality, named in every instruction."""

    optical = "optical"
    sar = "sar"
    infrared = "infrared"


SAR_DB_RANGES: dict[str, tuple[float, float]] = {
    "vv": (-25.0, 5.0),
    "vh": (-35.0, -5.0),
    "ratio": (0.0, 20.0),
}
"""Fixed display ranges in dB of the SAR composite channels: VV, VH and VV−VH."""
SAR_FLOOR_DB = -50.0
SENTINEL2_L1C_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")

# Eleven stops of matplotlib's "inferno" (0, 0.1, …, 1), interpolated linearly into a 256-entry table.
_INFERNO_STOPS = (
    (0, 0, 4), (22, 11, 57), (66, 10, 104), (106, 23, 110), (147, 38, 103), (188, 55, 84),
    (221, 81, 58), (243, 120, 25), (252, 165, 10), (246, 215, 70), (252, 255, 164),
)
_SAR_WORDS = {"vv", "vh", "hh", "hv", "sar", "rtc", "gamma0", "sigma0", "beta0", "grd", "slc", "s1a", "s1b"}
_IR_WORDS = {"ir", "lwir", "mwir", "swir", "tir", "thermal", "infrared", "flir", "brightness_temperature"}
_COLOUR_NAMES = {"red": ("red", "r"), "green": ("green", "g"), "blue": ("blue", "b")}
_BAND_NAMES = {"red": ("b4", "b04"), "green": ("b3", "b03"), "blue": ("b2", "b02")}


def _as_bands(array: np.ndarray) -> np.ndarray:
    """Return ``array`` as (bands, H, W), checking shape and dtype."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim != 3:
        raise ValueError(
            f"expected an array of shape (bands, height, width) or (height, width), got {array.shape}"
        )
    if array.shape[0] == 0:
        raise ValueError("expected 1 or more bands, got 0")
    if array.shape[1] == 0 or array.shape[2] == 0:
        raise ValueError(f"expected a non-empty image, got height×width {array.shape[1]}×{array.shape[2]}")
    if np.iscomplexobj(array):
        raise ValueError("complex data (SAR SLC) is not supported: convert to intensity |z|² first")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
            or array.dtype == np.bool_):
        raise ValueError(f"expected integer or floating-point pixels, got dtype {array.dtype}")
    return array


def valid_mask(array: np.ndarray, nodata: float | None = None, valid: np.ndarray | None = None) -> np.ndarray:
    """(H, W) True where a pixel holds data: finite in every band and not nodata in all bands.

    A masked array's mask counts too (a pixel is invalid when every band is masked, as GDAL's
    dataset mask). ``valid`` (an extra (H, W) mask, e.g. from alpha) is combined with AND.
    """
    mask = np.ma.getmaskarray(array) if np.ma.isMaskedArray(array) else None
    data = _as_bands(np.ma.getdata(array))
    ok = np.ones(data.shape[1:], dtype=bool)
    if np.issubdtype(data.dtype, np.floating):
        ok &= np.isfinite(data).all(axis=0)
    if nodata is not None and not np.isnan(nodata):
        ok &= ~(data == nodata).all(axis=0)
    if mask is not None:
        ok &= ~_as_bands(mask).all(axis=0)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != ok.shape:
            raise ValueError(f"valid mask shape {valid.shape} does not match the image {ok.shape}")
        ok &= valid
    return ok


def percentile_stretch(
    array: np.ndarray, low: float = 2.0, high: float = 98.0, valid: np.ndarray | None = None
) -> np.ndarray:
    """Stretch each band between its ``low`` and ``high`` percentiles to uint8 (bands, H, W).

    Statistics use valid, finite pixels only; invalid pixels come out 0. When the percentiles
    coincide (one value dominates) the band's min..max is used; a constant band becomes mid-grey
    (128); a band with no valid pixel is all 0.
    """
    if not 0 <= low < high <= 100:
        raise ValueError(f"expected 0 <= low < high <= 100, got low={low}, high={high}")
    data = _as_bands(np.ma.getdata(array))
    ok = valid_mask(array, valid=valid)
    out = np.zeros(data.shape, dtype=np.uint8)
    for i, band in enumerate(data):
        band_ok = ok & np.isfinite(band) if np.issubdtype(band.dtype, np.floating) else ok
        values = band[band_ok]
        if values.size == 0:
            continue
        lo, hi = np.percentile(values, [low, high])
        if hi <= lo:  # more than (high - low) % of one value: fall back to the full range
            lo, hi = values.min(), values.max()
        if hi <= lo:
            out[i][band_ok] = 128
            continue
        scaled = (band.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
        out[i] = np.where(band_ok, np.clip(scaled, 0, 255) + 0.5, 0).astype(np.uint8)
    return out


def scale_fixed(array: np.ndarray, lo: float, hi: float, valid: np.ndarray | None = None) -> np.ndarray:
    """Scale values linearly from the fixed range [lo, hi] to uint8, clipping outside; invalid → 0."""
    if not hi > lo:
        raise ValueError(f"expected hi > lo, got lo={lo}, hi={hi}")
    data = np.asarray(array, dtype=np.float32)
    ok = np.isfinite(data) if valid is None else np.asarray(valid, dtype=bool) & np.isfinite(data)
    scaled = np.clip((data - lo) * (255.0 / (hi - lo)), 0, 255) + 0.5
    return np.where(ok, scaled, 0).astype(np.uint8)


def sar_to_db(linear: np.ndarray, floor_db: float = SAR_FLOOR_DB) -> np.ndarray:
    """Linear backscatter power (σ0/γ0) → dB as float32.

    Zero or negative power (noise-subtracted pixels) becomes ``floor_db``; NaN and ±inf stay NaN so
    that callers can mask them. Display ranges are applied later (:data:`SAR_DB_RANGES`).
    """
    data = np.asarray(linear, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        db = 10.0 * np.log10(np.maximum(data, np.float32(10.0 ** (floor_db / 10.0))))
    return np.where(np.isfinite(data), db, np.nan).astype(np.float32)


def _looks_like_db(array: np.ndarray, valid: np.ndarray | None = None) -> bool:
    """True when float SAR values are already in dB (mostly negative), not linear power; only
    ``valid`` pixels (and finite ones) count, so a nodata value such as -9999 cannot decide it."""
    keep = np.isfinite(array) if valid is None else np.isfinite(array) & valid
    values = array[keep]
    return values.size > 0 and float(np.median(values)) < 0


def _sar_db(array: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    as_db = _looks_like_db(array, valid)
    return np.asarray(array, dtype=np.float32) if as_db else sar_to_db(array)


def sar_composite(vv: np.ndarray, vh: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """VV and VH (linear power or dB, (H, W)) → uint8 (H, W, 3): VV dB, VH dB, VV−VH dB.

    Fixed ranges from :data:`SAR_DB_RANGES`; a pixel invalid in either band is black in all three.
    """
    vv, vh = np.asarray(vv), np.asarray(vh)
    if vv.shape != vh.shape or vv.ndim != 2:
        raise ValueError(f"expected VV and VH of one (height, width) shape, got {vv.shape} and {vh.shape}")
    vv_db, vh_db = _sar_db(vv, valid), _sar_db(vh, valid)
    ok = np.isfinite(vv_db) & np.isfinite(vh_db)
    if valid is not None:
        ok &= valid
    channels = [
        scale_fixed(vv_db, *SAR_DB_RANGES["vv"], valid=ok),
        scale_fixed(vh_db, *SAR_DB_RANGES["vh"], valid=ok),
        scale_fixed(vv_db - vh_db, *SAR_DB_RANGES["ratio"], valid=ok),
    ]
    return np.stack(channels, axis=-1)


def colormap_display(gray: np.ndarray) -> np.ndarray:
    """uint8 grey (H, W) → (H, W, 3) RGB with an inferno-like colour map (for display only)."""
    gray = np.asarray(gray)
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise ValueError(f"expected a uint8 (height, width) image, got {gray.dtype} {gray.shape}")
    stops = np.asarray(_INFERNO_STOPS, dtype=np.float64)
    at = np.linspace(0.0, 1.0, len(stops))
    ramp = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(ramp, at, stops[:, c]) for c in range(3)], axis=-1)
    return np.rint(lut).astype(np.uint8)[gray]


def _name(value: object) -> str:
    """Lower-case text of a description or a colour interpretation (enum or string)."""
    return str(getattr(value, "name", value) or "").strip().lower()


def _find_band(names: Sequence[str], wanted: Sequence[str]) -> int | None:
    for number, name in enumerate(names, start=1):
        if name in wanted:
            return number
    return None


def select_rgb_bands(
    descriptions: Sequence[str | None] | None,
    colorinterp: Sequence[object] | None,
    count: int,
    override: Sequence[int] | None = None,
) -> tuple[int, int, int]:
    """Pick the (red, green, blue) band numbers, 1-based, of an optical raster.

    Order of evidence: ``override``; descriptions naming colours ("red", "Red"); colour
    interpretation; Sentinel-2 / Landsat 8-9 band names ("B04"/"B4" red, "B03" green, "B02" blue);
    13 bands without names = Sentinel-2 L1C order (4, 3, 2); otherwise the first three bands.
    One band gives grey (1, 1, 1); two bands are ambiguous and raise unless overridden.
    """
    if count < 1:
        raise ValueError(f"expected 1 or more bands, got {count}")
    if override is not None:
        picked = tuple(int(b) for b in override)
        if len(picked) == 1:
            picked = picked * 3
        if len(picked) != 3 or not all(1 <= b <= count for b in picked):
            raise ValueError(f"expected 1 or 3 band numbers between 1 and {count}, got {tuple(override)}")
        return picked  # type: ignore[return-value]
    if count == 1:
        return (1, 1, 1)
    if count == 2:
        raise ValueError("expected 1 band (grey) or 3+ bands (RGB) for an optical image, got 2: choose bands")
    for names, table in (
        ([_name(d) for d in descriptions or ()], _COLOUR_NAMES),
        ([_name(c) for c in colorinterp or ()], _COLOUR_NAMES),
        ([_name(d).replace(" ", "") for d in descriptions or ()], _BAND_NAMES),
    ):
        found = [_find_band(names, table[colour]) for colour in ("red", "green", "blue")]
        if all(found):
            return tuple(found)  # type: ignore[return-value]
    if count == 13:
        return (4, 3, 2)
    return (1, 2, 3)


def alpha_band(colorinterp: Sequence[object] | None) -> int | None:
    """The 1-based number of the alpha band, if the colour interpretation names one."""
    return _find_band([_name(c) for c in colorinterp or ()], ("alpha",))


def _words(*texts: object) -> set[str]:
    return {w for text in texts for w in re.split(r"[^a-z0-9]+", _name(text)) if w}


def detect_sensor(
    count: int,
    dtype: str,
    descriptions: Sequence[str | None] = (),
    tags: dict[str, str] | None = None,
    filename: str = "",
    sample: np.ndarray | None = None,
) -> tuple[Sensor, str]:
    """Guess the sensor from band count, dtype, names, tags and file name; returns (sensor, reason).

    ``sample`` (a few pixel values, e.g. an overview) lets float data be recognised as linear
    backscatter. The guess is only a default: the user can always override it.
    """
    tags = tags or {}
    words = _words(*descriptions, *tags.keys(), *tags.values(), filename.rsplit("/", 1)[-1])
    is_float = np.issubdtype(np.dtype(dtype), np.floating)
    if count <= 2 and words & _SAR_WORDS:
        return Sensor.sar, f"names or tags mention {sorted(words & _SAR_WORDS)}"
    if count == 1 and words & _IR_WORDS:
        return Sensor.infrared, f"one band; names or tags mention {sorted(words & _IR_WORDS)}"
    if count <= 2 and is_float and sample is not None:
        values = np.asarray(sample, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size and values.min() >= 0 and np.percentile(values, 99) <= 10:
            return Sensor.sar, f"{dtype} with values in 0..10, like linear backscatter power"
    if count >= 3:
        return Sensor.optical, f"{count} bands of {dtype}"
    if count == 2:
        return Sensor.sar, "two bands, taken as a dual-polarisation (VV, VH) pair"
    return Sensor.optical, f"one {dtype} band, no hint: taken as panchromatic (choose infrared if thermal)"


def _stack_rgb(bands: np.ndarray) -> np.ndarray:
    """(3, H, W) or (1, H, W) uint8 → (H, W, 3)."""
    if bands.shape[0] == 1:
        bands = np.repeat(bands, 3, axis=0)
    return np.ascontiguousarray(np.moveaxis(bands, 0, -1))


def _sar_rgb(data: np.ndarray, ok: np.ndarray, vh: np.ndarray | None) -> np.ndarray:
    if vh is None and data.shape[0] >= 2:
        data, vh = data[:1], data[1]
    if vh is not None:
        return sar_composite(data[0], np.asarray(np.ma.getdata(vh)), valid=ok)
    if data.dtype == np.uint8:
        return _stack_rgb(np.where(ok, data[:1], 0).astype(np.uint8))
    if np.issubdtype(data.dtype, np.floating):
        return _stack_rgb(scale_fixed(_sar_db(data[0], ok), *SAR_DB_RANGES["vv"], valid=ok)[np.newaxis])
    return _stack_rgb(percentile_stretch(data[:1], valid=ok))


def to_model_rgb(
    array: np.ndarray,
    sensor: Sensor | str,
    *,
    nodata: float | None = None,
    valid: np.ndarray | None = None,
    bands: Sequence[int] | None = None,
    vh: np.ndarray | None = None,
    descriptions: Sequence[str | None] | None = None,
    colorinterp: Sequence[object] | None = None,
    photo: bool = False,
) -> np.ndarray:
    """Any supported raster (bands, H, W) → the uint8 (H, W, 3) image the model sees.

    ``bands`` (1-based) overrides the optical band choice; ``vh`` is the VH band paired with a
    single VV band (or pass both as two bands). An alpha band (named by ``colorinterp``) is dropped
    and its zeros count as nodata. Masked arrays' masks count as nodata too. ``photo``: an 8-bit
    picture (JPEG, PNG) whose chosen bands are shown as they are, with no stretch.
    """
    sensor = Sensor(sensor)
    data = _as_bands(np.ma.getdata(array))
    ok = valid_mask(array, nodata=nodata, valid=valid)
    alpha = alpha_band(colorinterp)
    if alpha is not None and alpha <= data.shape[0]:
        ok &= data[alpha - 1] != 0
        keep = [i for i in range(data.shape[0]) if i != alpha - 1]
        data = data[keep]
        colorinterp = [c for i, c in enumerate(colorinterp or ()) if i != alpha - 1]
        descriptions = [d for i, d in enumerate(descriptions or ()) if i != alpha - 1] or None
    stretch = _as_is if photo else percentile_stretch
    if sensor is Sensor.sar:
        return _sar_rgb(data, ok, vh)
    if sensor is Sensor.infrared:
        if data.shape[0] != 1 and bands is None:
            raise ValueError(f"expected 1 band for an infrared image, got {data.shape[0]}: choose a band")
        band = data[bands[0] - 1 : bands[0]] if bands else data
        return _stack_rgb(stretch(band, valid=ok))
    picked = select_rgb_bands(descriptions, colorinterp, data.shape[0], override=bands)
    return _stack_rgb(stretch(data[[b - 1 for b in picked]], valid=ok))


def _as_is(bands: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """8-bit bands unchanged, nodata 0 (the ``photo`` rule of :func:`to_model_rgb`)."""
    if bands.dtype != np.uint8:
        raise ValueError(f"expected 8-bit pixels for a picture shown as it is, got {bands.dtype}")
    return np.where(valid, bands, 0).astype(np.uint8)


def to_display_rgb(array: np.ndarray, sensor: Sensor | str, **kwargs: object) -> np.ndarray:
    """Like :func:`to_model_rgb`, but infrared is painted with the colour map for people to read."""
    rgb = to_model_rgb(array, sensor, **kwargs)  # type: ignore[arg-type]
    if Sensor(sensor) is Sensor.infrared:
        return colormap_display(rgb[..., 0])
    return rgb
