"""Draw detections and the analyst's region on the window image (PIL), one colour per class.

Detections are kept in full-raster pixels; the image shown is a window of the raster, possibly
resized for display (:func:`earthgpt.box_spaces.raster_to_image` places the boxes on it).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from app.session_io import Session
from earthgpt.box_checks import box_problem
from earthgpt.box_spaces import raster_to_image
from earthgpt.geometry import HBB, Detection, box_corners, box_kind
from earthgpt.raster import Tile

LAYERS = ("HBB", "OBB", "Labels", "Region")
"""The overlay layers the analyst can switch on and off."""

PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (255, 225, 25), (23, 190, 207), (127, 127, 127),
)
REGION_COLOUR = (255, 255, 255)


def class_colour(label: str) -> tuple[int, int, int]:
    """A stable colour for a class name (the same in every session and on the map)."""
    return PALETTE[zlib.crc32(label.strip().lower().encode()) % len(PALETTE)]


def hex_colour(label: str) -> str:
    """:func:`class_colour` as ``#rrggbb``."""
    return "#{:02x}{:02x}{:02x}".format(*class_colour(label))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without scalable default font
        return ImageFont.load_default()


def _label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, colour: tuple[int, int, int],
           font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x, y = xy[0], max(0.0, xy[1] - (bottom - top) - 4)
    draw.rectangle((x, y, x + right - left + 4, y + bottom - top + 4), fill=colour)
    ink = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
    draw.text((x + 2 - left, y + 2 - top), text, fill=ink, font=font)


def draw_overlays(
    image: np.ndarray,
    detections: Sequence[Detection],
    window: Tile,
    *,
    layers: Sequence[str] = LAYERS,
    region: HBB | None = None,
) -> np.ndarray:
    """The window image with boxes drawn: HBB as rectangles, OBB as polygons, labels, the region.

    ``image`` shows ``window`` of the raster (resampled to its own size); ``detections`` and
    ``region`` are in full-raster pixels; ``layers`` names which of :data:`LAYERS` to draw.
    Boxes that are not usable (:func:`earthgpt.box_checks.box_problem`) are not drawn.
    Returns a new uint8 H×W×3 array; the input is not changed.
    """
    canvas = Image.fromarray(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 300))
    font = _font(max(11, round(max(canvas.size) / 45)))
    shown = set(layers)
    size = canvas.size
    for det in detections:
        if box_kind(det.box).upper() not in shown or box_problem(det.box, None) is not None:
            continue
        colour = class_colour(det.label)
        corners = box_corners(raster_to_image(det.box, window, size))
        draw.polygon(corners, outline=colour, width=width)
        if "Labels" in shown:
            top_left = min(corners, key=lambda p: (p[1], p[0]))
            text = det.label if det.score is None else f"{det.label} {det.score:.2f}"
            _label(draw, top_left, text, colour, font)
    if region is not None and "Region" in shown:
        corners = box_corners(raster_to_image(region, window, size))
        draw.polygon(corners, outline=REGION_COLOUR, width=width)
        draw.polygon([(x + width, y + width) for x, y in corners], outline=(0, 0, 0), width=1)
    return np.asarray(canvas)


def display_factor(size: tuple[int, int], min_side: int) -> int:
    """The whole number a ``(width, height)`` image is enlarged by for display, so a small tile
    reaches about ``min_side`` pixels on its longest side (1: shown as it is)."""
    return max(1, min_side // max(1, *size)) if min_side > 0 else 1


def session_view(session: Session, min_side: int = 0) -> np.ndarray | None:
    """The current window with the session's detections and region drawn, for the annotator.

    A window image smaller than ``min_side`` pixels is first enlarged by :func:`display_factor`
    (each pixel a square block), so boxes and lines are drawn at the size they are seen."""
    if session.view is None or session.window is None:
        return None
    factor = display_factor((session.view.shape[1], session.view.shape[0]), min_side)
    view = session.view.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else session.view
    return draw_overlays(view, [f.detection for f in session.found], Tile(*session.window),
                         layers=session.layers, region=session.region)


def session_overview(session: Session) -> np.ndarray | None:
    """The whole-raster overview with the detections and the current window's outline."""
    if session.overview is None or session.info is None:
        return None
    height, width = session.overview.shape[:2]
    whole = Tile(0, 0, session.info.width, session.info.height)
    image = draw_overlays(session.overview, [f.detection for f in session.found], whole,
                          layers=[layer for layer in session.layers if layer != "Labels"])
    if session.window is None:
        return image
    col_off, row_off, w, h = session.window
    seen = HBB(col_off, row_off, col_off + w, row_off + h)
    outline = box_corners(raster_to_image(seen, whole, (width, height)))
    canvas = Image.fromarray(image)
    line = max(2, round(max(width, height) / 250))
    ImageDraw.Draw(canvas).polygon(outline, outline=(255, 255, 0), width=line)
    return np.asarray(canvas)
