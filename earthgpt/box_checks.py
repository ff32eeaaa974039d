"""Whether a box is usable: the one check a box passes before it is drawn, mapped, exported or
written to training data.

A box from the model, an analyst or an old session file can be unusable: zero width or height,
an oriented box whose corners are collinear, an ``[x1, y1, x2, y2]`` written with its corners
swapped, or a box wholly outside the image. :func:`order_problem` and :func:`box_problem` say
which, in words shown to users (the reasons below). The parsers of :mod:`earthgpt.textbox` report
such boxes as invalid instead of passing them on; the drawing and export code skips any that still
reach it.
"""

from __future__ import annotations

from earthgpt.geometry import GRID, HBB, OBB, Box

ZERO_AREA = "zero area"
ZERO_WIDTH = "zero width"
ZERO_HEIGHT = "zero height"
X_INVERTED = "x1 > x2"
Y_INVERTED = "y1 > y2"
OFF_IMAGE = "off the image"

_FLAT = 1e-9
"""An OBB is flat when its area is below this fraction of its enclosing square's."""


def order_problem(x1: float, y1: float, x2: float, y2: float) -> str | None:
    """``"x1 > x2"`` or ``"y1 > y2"`` for an xyxy box written with corners swapped, else None.

    Only text can be written this way: an :class:`~earthgpt.geometry.HBB` refuses it."""
    if x1 > x2:
        return X_INVERTED
    if y1 > y2:
        return Y_INVERTED
    return None


def box_problem(box: Box, size: tuple[float, float] | None = (GRID, GRID)) -> str | None:
    """Why ``box`` is not a usable box, or None when it is.

    ``"zero area"`` (a point, or an OBB with collinear corners), ``"zero width"``, ``"zero
    height"``, or ``"off the image"`` when no part of it with an area lies inside
    ``0..width × 0..height``. ``size`` is the image's ``(width, height)`` in the box's own space:
    the 0–1000 grid by default, full-raster pixels for a raster's boxes; None skips the image test
    (a space without bounds). A box partly outside the image is usable (drawing clips it).
    """
    if isinstance(box, HBB):
        x1, y1, x2, y2 = box.as_list()
        if box.width <= 0:
            return ZERO_AREA if box.height <= 0 else ZERO_WIDTH
        if box.height <= 0:
            return ZERO_HEIGHT
    elif isinstance(box, OBB):
        x1, y1, x2, y2 = box.to_hbb().as_list()
        extent = max(x2 - x1, y2 - y1)
        if extent <= 0 or box.area <= _FLAT * extent * extent:
            return ZERO_AREA
    else:
        raise ValueError(f"expected an HBB or OBB, got {type(box).__name__}")
    if size is not None and (x2 <= 0 or y2 <= 0 or x1 >= size[0] or y1 >= size[1]):
        return OFF_IMAGE
    return None

