"""``earthgpt detect IMAGE --out FILE.geojson|.gpkg``: whole-scene detection, tile by tile.

The raster is read one window at a time (rasterio, never whole), each window made model-ready by
:func:`earthgpt.sensors.to_model_rgb`, answered by the model, and the boxes merged across the
overlapping windows (:func:`earthgpt.detection.detect_scene`). GeoJSON is lon/lat (RFC 7946);
GeoPackage keeps the raster's CRS; an image without georeferencing is written in pixel space.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from earthgpt.detection import (
    SceneResult,
    Tile,
    chat_answerer,
    detect_scene,
    feature_collection,
    tile_grid,
    write_gpkg,
)
from earthgpt.georef import dataset_mappers
from earthgpt.tasks import Sensor, Task, instruction

EXIT_BAD_INPUT = 2
MAX_BANDS = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the detect arguments."""
    parser.add_argument("image", type=Path, help="GeoTIFF, PNG or JPEG")
    parser.add_argument("--out", type=Path, required=True, help="output FILE.geojson or FILE.gpkg")
    parser.add_argument("--classes", default="", help="comma-separated class names (default: all)")
    parser.add_argument("--obb", action="store_true", help="oriented boxes instead of horizontal ones")
    parser.add_argument("--tile", type=int, default=512, help="window size in pixels (default: 512)")
    parser.add_argument("--overlap", type=int, default=64, help="overlap between windows (default: 64)")
    parser.add_argument("--batch", type=int, default=4, help="windows per step (default: 4)")
    parser.add_argument("--iou", type=float, default=0.5, help="NMS IoU threshold across windows")
    parser.add_argument("--sensor", choices=[s.value for s in Sensor], default=None,
                        help="sensor of the image (default: guessed from its metadata)")
    parser.add_argument("--model", default="nano", help="preset name or checkpoint folder (default: nano)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="answer length limit per window")
    quant = parser.add_mutually_exclusive_group()
    quant.add_argument("--load-4bit", action="store_true", help="load the LLM in 4 bit (bitsandbytes)")
    quant.add_argument("--load-8bit", action="store_true", help="load the LLM in 8 bit (bitsandbytes)")


def open_raster(path: Path) -> Any:
    """Open a raster with rasterio, or raise ValueError with a message for the user."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path)
    except RasterioIOError as err:
        raise ValueError(f"{path.name} is corrupt or not a raster format: {err}") from err
    if src.count > MAX_BANDS:
        src.close()
        raise ValueError(f"{path.name} has {src.count} bands; at most {MAX_BANDS} are supported")
    return src


def raster_sensor(src: Any, path: Path, chosen: str | None) -> Sensor:
    """The sensor the user chose, else the one guessed from the raster's metadata."""
    from earthgpt.sensors import detect_sensor

    if chosen:
        return Sensor(chosen)
    sample = src.read(1, out_shape=(min(64, src.height), min(64, src.width)), masked=True).compressed()
    return detect_sensor(src.count, src.dtypes[0], src.descriptions, src.tags(), path.name, sample=sample)[0]


def tile_reader(src: Any, sensor: Sensor, max_side: int) -> Callable[[Tile], np.ndarray | None]:
    """Read one window as the model's RGB (longest side at most ``max_side``); None if all nodata."""
    from rasterio.windows import Window

    from earthgpt.sensors import to_model_rgb

    def read(tile: Tile) -> np.ndarray | None:
        scale = max(1.0, max(tile.width, tile.height) / max_side)
        shape = (src.count, max(1, round(tile.height / scale)), max(1, round(tile.width / scale)))
        array = src.read(window=Window(tile.col_off, tile.row_off, tile.width, tile.height), out_shape=shape,
                         masked=True)
        if np.ma.getmaskarray(array).all():
            return None
        return to_model_rgb(array, sensor, nodata=src.nodata, descriptions=src.descriptions,
                            colorinterp=[c.name for c in src.colorinterp])

    return read


def write_result(out: Path, src: Any, result: SceneResult, properties: dict[str, Any]) -> None:
    """Write the merged detections as GeoJSON (lon/lat) or GeoPackage (native CRS); the raster is
    placed by its affine, else its GCPs (:mod:`earthgpt.georef`, the app's mapping too)."""
    to_map, to_lonlat = dataset_mappers(src)
    props = [dict(properties) for _ in result.detections]
    if out.suffix.lower() == ".gpkg":
        out.unlink(missing_ok=True)
        to_map_fn, crs = to_map if to_map else (None, None)
        write_gpkg(str(out), result.detections, props, to_map=to_map_fn, crs=crs)
        return
    collection = feature_collection(result.detections, props, to_lonlat=to_lonlat)
    out.write_text(json.dumps(collection), encoding="utf-8")


def detect_file(
    args: argparse.Namespace, new_chat: Callable[[Sensor], Any], model_name: str
) -> tuple[SceneResult, Sensor]:
    """The whole command after the model is loaded (tests pass a scripted ``new_chat``)."""
    from tqdm import tqdm

    if args.out.suffix.lower() not in (".geojson", ".json", ".gpkg"):
        raise ValueError(f"--out must end in .geojson or .gpkg, got {args.out.name}")
    if args.tile < 16 or not 0 <= args.overlap < args.tile or args.batch < 1:
        raise ValueError(f"expected --tile >= 16, 0 <= --overlap < --tile, --batch >= 1; got "
                         f"{args.tile}, {args.overlap}, {args.batch}")
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] or None
    with open_raster(args.image) as src:
        sensor = raster_sensor(src, args.image, args.sensor)
        prompt = instruction(Task.detection_obb if args.obb else Task.detection_hbb, sensor, classes=classes)
        tiles = tile_grid(src.width, src.height, args.tile, args.overlap)
        answer = chat_answerer(lambda: new_chat(sensor), prompt, args.max_new_tokens)
        with tqdm(total=len(tiles), unit="window", desc="detect", file=sys.stderr) as bar:
            result = detect_scene(
                tiles, tile_reader(src, sensor, args.tile), answer, raster_size=(src.width, src.height),
                batch=args.batch, classes=classes, iou_threshold=args.iou,
                progress=lambda done, _total: bar.update(done - bar.n),
            )
        properties = {"prompt": prompt, "turn": None, "model": model_name, "source": args.image.name}
        write_result(args.out, src, result, properties)
    return result, sensor


def run(args: argparse.Namespace) -> int:
    """Load the model, detect over the whole image, write ``--out``, print counts per class."""
    from earthgpt.inference import ChatSession, load_model

    try:
        model, processor = load_model(args.model, load_4bit=args.load_4bit, load_8bit=args.load_8bit)
        result, _ = detect_file(args, lambda sensor: ChatSession(model, processor, sensor=sensor.value),
                                args.model)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{len(result.detections)} objects in {result.tiles} windows ({result.tiles_empty} empty)")
    print(f"written: {args.out}")
    for name, count in result.counts().items():
        print(f"  {name}: {count}")
    return 0
