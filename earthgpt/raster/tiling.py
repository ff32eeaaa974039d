"""Tiling a raster into overlapping windows: the one grid of whole-scene detection (CLI and app)
and of the app's window picker."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tile:
    """A window of the full raster, in raster pixels (offsets and size)."""

    col_off: int
    row_off: int
    width: int
    height: int


def _starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)  # the last tile ends exactly at the raster edge
    return starts


def tile_grid(width: int, height: int, tile: int = 512, overlap: int = 64) -> list[Tile]:
    """Tiles of ``tile`` pixels overlapping by ``overlap`` that cover a ``width`` × ``height`` raster.

    Row-major order. The last tile of each row/column is shifted back to end at the raster edge
    (so every tile is full-size unless the raster is smaller than one tile).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"raster size must be positive, got {width}x{height}")
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"expected tile > 0 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    stride = tile - overlap
    return [
        Tile(col, row, min(tile, width), min(tile, height))
        for row in _starts(height, tile, stride)
        for col in _starts(width, tile, stride)
    ]
