"""Rasters: open and check a file, read its header, overviews (a quick preview of a big one) and
windows, tile it, and make the model's uint8 RGB from it. Every reader of image files (chat, eval,
training, detect, the app) goes through this package."""

from earthgpt.raster.files import (
    MAX_BANDS,
    RasterError,
    RasterInfo,
    inspect,
    open_raster,
    overview_shape,
    read_overview,
    read_window,
)
from earthgpt.raster.model_input import (
    WHOLE_IMAGE_SIDE,
    ModelSource,
    NodataWindowError,
    cross_pol_name,
    find_sar_pair,
    load_for_model,
    model_image,
    model_source,
    parse_band_numbers,
    plan_bands,
    window_reader,
)
from earthgpt.raster.overview import Overview, quick_overview
from earthgpt.raster.tiling import Tile, tile_grid

__all__ = [
    "MAX_BANDS", "WHOLE_IMAGE_SIDE", "ModelSource", "NodataWindowError", "Overview", "RasterError",
    "RasterInfo", "Tile", "cross_pol_name", "find_sar_pair", "inspect", "load_for_model", "model_image",
    "model_source",
    "open_raster", "overview_shape", "parse_band_numbers", "plan_bands", "quick_overview", "read_overview",
    "read_window", "tile_grid", "window_reader",
]
