"""``earthgpt detect IMAGE --out FILE.geojson|.gpkg``: whole-scene detection, tile by tile.

The raster is read one window at a time (never whole), each window made model-ready by
:func:`earthgpt.raster.window_reader` as the app makes it (the same sensor rule, band plan and
VV → VH pairing), answered by the model, and the boxes merged across the overlapping windows
(:func:`earthgpt.scene_detection.detect_scene`). GeoJSON is lon/lat (RFC 7946); GeoPackage keeps
the raster's CRS; an image without georeferencing is written in pixel space. Boxes that are not
usable (zero area, corners swapped, off the window) are left out and counted in the summary.

Archive mode (a folder, a glob, ``@list.txt`` or several paths; ``--out`` is then a folder):
one GeoPackage per scene, ``merged.gpkg`` and ``manifest.json``, resumable and sharded across
processes (:mod:`earthgpt.scene_archive`).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from earthgpt import scene_archive
from earthgpt.box_spaces import raster_to_lonlat, raster_to_map
from earthgpt.commands import add_quantization_arguments
from earthgpt.raster import model_source, open_raster, parse_band_numbers, tile_grid, window_reader
from earthgpt.scene_detection import (
    DEFAULT_BATCH_SIZE,
    SceneResult,
    chat_answerer,
    detection_stop_rule,
    iter_detect_scene,
)
from earthgpt.sensors import Sensor
from earthgpt.tasks import Task, instruction
from earthgpt.vector_export import Skipped, feature_collection, skipped_note, write_geojson, write_gpkg

EXIT_BAD_INPUT = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the detect arguments."""
    parser.add_argument("image", type=Path,
                        help="GeoTIFF, PNG or JPEG; or a folder, a glob or @list.txt (archive mode)")
    parser.add_argument("more", type=Path, nargs="*", metavar="MORE", help="more scenes (archive mode)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output FILE.geojson or FILE.gpkg; a FOLDER in archive mode")
    parser.add_argument("--classes", default="", help="comma-separated class names (default: all)")
    parser.add_argument("--obb", action="store_true", help="oriented boxes instead of horizontal ones")
    parser.add_argument("--tile", type=int, default=512, help="window size in pixels (default: 512)")
    parser.add_argument("--overlap", type=int, default=64, help="overlap between windows (default: 64)")
    parser.add_argument("--batch-size", "--batch", dest="batch", type=int, default=DEFAULT_BATCH_SIZE,
                        help="windows answered together in one token loop (default: "
                             f"{DEFAULT_BATCH_SIZE}; 1 answers one window at a time)")
    parser.add_argument("--iou", type=float, default=0.5, help="NMS IoU threshold across windows")
    parser.add_argument("--sensor", choices=[s.value for s in Sensor], default=None,
                        help="sensor of the image (default: guessed from its metadata)")
    parser.add_argument("--bands", type=parse_bands, default=None,
                        help="1 or 3 band numbers to show the model, e.g. 4,3,2 (default: automatic)")
    parser.add_argument("--model", default="nano", help="preset name or checkpoint folder (default: nano)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="answer length limit per window")
    parser.add_argument("--keep-repeats", action="store_true",
                        help="let a window's answer run on when it repeats itself (default: stop it at a "
                             "repeated line, 2 lines in a row without a usable box, or the 3rd box in "
                             "a row marching along a row, column or diagonal)")
    add_quantization_arguments(parser)
    scene_archive.add_arguments(parser)


def parse_bands(text: str) -> tuple[int, ...] | None:
    """The argparse type of ``--bands`` (:func:`earthgpt.raster.parse_band_numbers`)."""
    try:
        return parse_band_numbers(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def write_result(out: Path, src: Any, result: SceneResult, properties: dict[str, Any]) -> list[Skipped]:
    """Write the merged detections as GeoJSON (lon/lat) or GeoPackage (native CRS); the raster is
    placed by its affine, else its GCPs (:mod:`earthgpt.box_spaces`, the app's mapping too).
    Returns the detections that could not be placed (e.g. off the Earth), which are left out."""
    props = [dict(properties) for _ in result.detections]
    size = (src.width, src.height)
    if out.suffix.lower() == ".gpkg":
        to_map, crs = raster_to_map(src.transform, src.crs, *src.gcps) or (None, None)
        return write_gpkg(str(out), result.detections, props, to_map=to_map, crs=crs, raster_size=size)
    to_lonlat = raster_to_lonlat(src.transform, src.crs, *src.gcps)
    collection = feature_collection(result.detections, props, to_lonlat=to_lonlat, raster_size=size)
    write_geojson(out, collection)  # whole or not at all
    return collection.get("skipped", [])


def check_window_options(args: argparse.Namespace) -> None:
    """ValueError unless ``--tile >= 16``, ``0 <= --overlap < --tile`` and ``--batch-size >= 1``."""
    if args.tile < 16 or not 0 <= args.overlap < args.tile or args.batch < 1:
        raise ValueError(f"expected --tile >= 16, 0 <= --overlap < --tile, --batch-size >= 1; got "
                         f"{args.tile}, {args.overlap}, {args.batch}")


def scene_detector(
    args: argparse.Namespace, new_chat: Callable[[Sensor], Any] | None = None
) -> Callable[[Path, Path], None]:
    """Archive mode, once per process: load the model (unless tests give a scripted ``new_chat``)
    and return ``(scene, out_gpkg) → None`` (:data:`earthgpt.scene_archive.DetectOne`). A Ctrl-C
    stops the archive instead of leaving a partial scene for a finished one."""
    chat = new_chat or _model_chats(args)

    def detect(scene: Path, out: Path) -> None:
        scene_args = argparse.Namespace(**{**vars(args), "image": scene, "out": out})
        result, _ = detect_file(scene_args, chat, args.model)
        if result.cancelled:
            raise KeyboardInterrupt

    return detect


def _model_chats(args: argparse.Namespace) -> Callable[[Sensor], Any]:
    """Load ``--model`` once; a fresh :class:`~earthgpt.inference.ChatSession` per call."""
    from earthgpt.inference import UNTRAINED_WARNING, ChatSession, is_untrained_start, load_model

    model, processor = load_model(args.model, load_4bit=args.load_4bit, load_8bit=args.load_8bit)
    if is_untrained_start(args.model):
        print(f"WARNING: {UNTRAINED_WARNING}", file=sys.stderr)
    return lambda sensor: ChatSession(model, processor, sensor=sensor.value)


def detect_file(
    args: argparse.Namespace, new_chat: Callable[[Sensor], Any], model_name: str
) -> tuple[SceneResult, Sensor]:
    """The whole command after the model is loaded (tests pass a scripted ``new_chat``); a warning
    on stderr names the detections that could not be placed in the file (:func:`write_result`)."""
    from tqdm import tqdm

    if args.out.suffix.lower() not in (".geojson", ".json", ".gpkg"):
        raise ValueError(f"--out must end in .geojson or .gpkg, got {args.out.name}")
    if not args.out.parent.is_dir():  # fail now, not after the whole scene has been answered
        raise ValueError(f"the folder of --out does not exist: {args.out.parent}")
    check_window_options(args)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] or None
    source = model_source(args.image, args.sensor)  # header, sensor and VH sibling: once
    read = window_reader(source, args.tile, args.bands)
    sensor, width, height = source.sensor, source.info.width, source.info.height
    prompt = instruction(Task.detection_obb if args.obb else Task.detection_hbb, sensor, classes=classes)
    tiles = tile_grid(width, height, args.tile, args.overlap)
    answer = chat_answerer(lambda: new_chat(sensor), prompt, args.max_new_tokens,
                           stop_rule=None if args.keep_repeats else detection_stop_rule())
    scan = iter_detect_scene(tiles, read, answer, raster_size=(width, height), batch=args.batch,
                             classes=classes, iou_threshold=args.iou)
    result = next(scan)
    with tqdm(total=len(tiles), unit="window", desc="detect", file=sys.stderr) as bar:
        try:
            for result in scan:
                bar.update(result.tiles_done - bar.n)
        except KeyboardInterrupt:  # Ctrl-C: write what the windows done so far found
            result.cancelled = True
    properties = {"prompt": prompt, "turn": None, "model": model_name, "source": args.image.name}
    with open_raster(args.image) as src:
        skipped = write_result(args.out, src, result, properties)
    if skipped:
        print(f"warning: {skipped_note(skipped)}", file=sys.stderr)
    return result, sensor


def run(args: argparse.Namespace) -> int:
    """Load the model, detect over the whole image, write ``--out``, print counts per class.

    Bad input (a missing or corrupt file, an unknown model, a missing quantization package, an
    output folder that does not exist) ends with a one-line ``error: …`` and exit status 2.
    Archive mode: :func:`earthgpt.scene_archive.main` (exit status 1 when a scene failed).
    """
    if scene_archive.wants_archive(args):
        loader = functools.partial(scene_detector, args)
        return scene_archive.main(args, loader, check=check_window_options)
    from rasterio.errors import RasterioError

    from earthgpt.inference import UNTRAINED_WARNING, ChatSession, is_untrained_start, load_model

    try:
        model, processor = load_model(args.model, load_4bit=args.load_4bit, load_8bit=args.load_8bit)
        if is_untrained_start(args.model):
            print(f"WARNING: {UNTRAINED_WARNING}", file=sys.stderr)
        started = time.monotonic()
        result, _ = detect_file(args, lambda sensor: ChatSession(model, processor, sensor=sensor.value),
                                args.model)
    except (ValueError, OSError, ImportError, RasterioError) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{len(result.detections)} objects in {result.tiles} windows ({result.tiles_empty} empty) "
          f"in {time.monotonic() - started:.0f} s")
    if result.cancelled:
        print(f"interrupted: only the first {result.tiles_done} of {result.tiles} windows were answered",
              file=sys.stderr)
    print(f"written: {args.out}")
    for name, count in result.counts().items():
        print(f"  {name}: {count}")
    if result.invalid_note():
        print(f"dropped: {result.invalid_note()}")
    if result.limit_note():
        print(f"warning: {result.limit_note()}", file=sys.stderr)
    if result.stop_note():
        print(f"note: {result.stop_note()}", file=sys.stderr)
    return 0
