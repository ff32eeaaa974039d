"""Read an image file as the model sees it: uint8 H×W×3 RGB, never the whole of a large raster.

PNG/JPEG (and other Pillow formats) are decoded at a reduced scale; GeoTIFFs and other rasters go
through rasterio as a decimated read (at most ``MAX_READ_SIDE`` pixels on the long side) and are
made model-ready by :func:`earthgpt.sensors.to_model_rgb` for the image's sensor (guessed from the
metadata when not given). Boxes on the 0–1000 grid are unaffected by the decimation, since the
aspect ratio is kept.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from earthgpt.sensors import Sensor

MAX_READ_SIDE = 1024  # longest side of the decimated read; the model sees config.image_size anyway
PIL_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif"}
_EIGHT_BIT_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}


class ImageReadError(ValueError):
    """The file is missing, unreadable or cannot be made into a model image; the message says why."""


def read_image(path: Path, sensor: str | None = None) -> tuple[np.ndarray, tuple[int, int], str | None]:
    """The image as model-ready uint8 H×W×3, its full size ``(width, height)`` and the sensor used.

    Raises :class:`ImageReadError` for a missing, unreadable or unsupported file.
    """
    if not path.is_file():
        raise ImageReadError(f"image not found: {path}")
    if path.suffix.lower() in PIL_SUFFIXES:
        return _read_pil(path, sensor)
    return _read_raster(path, sensor)


def _read_pil(path: Path, sensor: str | None) -> tuple[np.ndarray, tuple[int, int], str | None]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            size = image.size
            image.draft("RGB", (MAX_READ_SIDE, MAX_READ_SIDE))  # JPEG: decode at a reduced scale
            if image.mode in _EIGHT_BIT_MODES:
                image = image.convert("RGB")
                image.thumbnail((MAX_READ_SIDE, MAX_READ_SIDE))
                return np.asarray(image, dtype=np.uint8), size, sensor
            image.thumbnail((MAX_READ_SIDE, MAX_READ_SIDE))
            array = np.asarray(image)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as error:
        raise ImageReadError(f"cannot read image {path}: {error}") from error
    from earthgpt.sensors import to_model_rgb

    used = sensor or Sensor.optical.value
    return to_model_rgb(array[np.newaxis], used), size, used


def _read_raster(path: Path, sensor: str | None) -> tuple[np.ndarray, tuple[int, int], str | None]:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    from earthgpt.sensors import detect_sensor, to_model_rgb

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                scale = max(src.width, src.height) / MAX_READ_SIDE
                out_h, out_w = (max(1, math.ceil(n / max(scale, 1.0))) for n in (src.height, src.width))
                array = src.read(out_shape=(src.count, out_h, out_w), masked=True)
                size, nodata = (src.width, src.height), src.nodata
                descriptions, colorinterp = src.descriptions, src.colorinterp
                tags, dtype = src.tags(), src.dtypes[0]
    except (RasterioError, OSError) as error:
        raise ImageReadError(f"cannot read image {path}: {error}") from error
    if sensor is None:
        sample = array.compressed()[:: max(1, array.size // 100_000)]
        detected, _ = detect_sensor(array.shape[0], dtype, descriptions, tags, path.name, sample=sample)
        sensor = detected.value
    try:
        rgb = to_model_rgb(array, sensor, nodata=nodata, descriptions=descriptions, colorinterp=colorinterp)
    except ValueError as error:
        raise ImageReadError(f"cannot make a model image from {path} as {sensor}: {error}") from error
    return rgb, size, sensor
