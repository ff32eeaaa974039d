"""Rasters: open and check a file, read its header, overviews and windows, tile it, and make the
model's uint8 RGB from it. Every reader of image files (chat, eval, training, detect, the app)
goes through this package."""

from earthgpt.raster.tiling import Tile, tile_grid

__all__ = ["Tile", "tile_grid"]
