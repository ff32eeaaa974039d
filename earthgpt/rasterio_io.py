"""Model input from raster files, shared by ``earthgpt detect`` and the app (which re-exports it
from :mod:`app.raster`): the VV → VH sibling of a SAR file and which bands to read.

Both build the model's RGB the same way: a single-band SAR file whose cross-polarised sibling
exists becomes the VV/VH composite, and only the bands needed (the user's, or the RGB of a
multispectral optical raster, plus an alpha band as the nodata mask) are read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from earthgpt.sensors import Sensor, alpha_band, select_rgb_bands

_POL_TOKEN = re.compile(r"(?<![a-z0-9])(vv|hh)(?![a-z0-9])", re.IGNORECASE)


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
    matches = list(_POL_TOKEN.finditer(path.name))
    if not matches:
        return None
    last = matches[-1]
    sibling = path.with_name(path.name[: last.start()] + _cross_pol(last.group(1)) + path.name[last.end() :])
    return sibling if sibling.is_file() else None


def plan_bands(
    sensor: Sensor | str,
    count: int,
    descriptions: Sequence[str | None],
    colorinterp: Sequence[object],
    bands: Sequence[int] | None = None,
) -> tuple[list[int] | None, list[int] | None]:
    """Which bands to read (1-based; None: all) and the band choice within them (for
    :func:`earthgpt.sensors.to_model_rgb`'s ``bands``; None: automatic).

    Only the needed bands are read: the user's ``bands`` (1 or 3 of them), or the RGB of an
    optical raster with more than three bands; the alpha band, when there is one, comes along.
    Raises ValueError for band numbers the raster does not have.
    """
    if bands:
        chosen = list(bands)
        if len(chosen) not in (1, 3) or not all(1 <= b <= count for b in chosen):
            raise ValueError(f"expected 1 or 3 band numbers between 1 and {count}, got {chosen}")
    elif Sensor(sensor) is Sensor.optical and count > 3:
        chosen = list(select_rgb_bands(descriptions, colorinterp, count))
    else:
        return None, None
    alpha = alpha_band(colorinterp)
    extra = [alpha] if alpha and alpha not in chosen else []
    return chosen + extra, list(range(1, len(chosen) + 1))
