"""``earthgpt chat IMAGE "PROMPT"``: one answer about one image, streamed to stdout.

The image (GeoTIFF, PNG, JPEG, …) is read as eval and training read it: a decimated overview
(never the whole raster) made model-ready by :func:`earthgpt.raster.model_image`.
``--json`` prints the answer with the boxes parsed from it (grid 0–1000 and pixels of IMAGE) and
the boxes it wrote that are not usable (``invalid``: as written, with the reason).
Bad input gets a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from earthgpt.commands import add_quantization_arguments
from earthgpt.conversation import IMAGE_PLACEHOLDER
from earthgpt.sensors import Sensor

EXIT_BAD_INPUT = 2


class InputError(ValueError):
    """Bad user input: the message is shown as is and the command exits with status 2."""


def read_image(path: Path, sensor: str | None) -> tuple[np.ndarray, tuple[int, int], str]:
    """The image as the model sees it (:func:`earthgpt.raster.model_image`), its full size
    ``(width, height)`` and the sensor used; errors as :class:`InputError`."""
    from earthgpt.raster import RasterError, model_image

    if not path.is_file():
        raise InputError(f"image not found: {path}")
    try:
        rgb, meta = model_image(path, sensor)
    except RasterError as error:
        raise InputError(f"cannot read image {path}: {error}") from error
    except ValueError as error:  # the pixels do not fit the sensor (e.g. 3 bands as infrared)
        raise InputError(f"cannot make a model image from {path}: {error}") from error
    return rgb, meta["size"], str(meta["sensor"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the chat arguments."""
    parser.add_argument("image", type=Path, help="PNG, JPEG or GeoTIFF image")
    parser.add_argument("prompt", help="the question or instruction")
    parser.add_argument("--model", default="nano", help="preset name or checkpoint folder (default: nano)")
    parser.add_argument("--sensor", choices=[s.value for s in Sensor], default=None,
                        help="sensor of the image (default: guessed from its metadata)")
    parser.add_argument("--json", action="store_true", help="print answer and parsed boxes as JSON")
    parser.add_argument("--max-new-tokens", type=_positive_int, default=256, help="answer length limit")
    parser.add_argument("--keep-repeats", action="store_true",
                        help="let the answer run on when it repeats a line or its boxes march along a row, "
                             "column or diagonal (default: stop there, as earthgpt detect and the app do)")
    add_quantization_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Answer the prompt; returns the exit status (2 for bad input)."""
    from earthgpt.conversation import PromptTooLongError
    from earthgpt.inference import UNTRAINED_WARNING, ChatSession, is_untrained_start, load_model
    from earthgpt.scene_detection import detection_stop_rule

    try:
        prompt = _check_prompt(args.prompt)
        rgb, size, sensor = read_image(args.image, args.sensor)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        model, processor = load_model(args.model, load_4bit=args.load_4bit, load_8bit=args.load_8bit)
    except (ValueError, FileNotFoundError, ConnectionError, ImportError) as error:
        print(f"error: cannot load model {args.model!r}: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    warning = UNTRAINED_WARNING if is_untrained_start(args.model) else None
    if warning:
        print(f"WARNING: {warning}", file=sys.stderr)
    session = ChatSession(model, processor, sensor=sensor)
    session.set_image(rgb)
    # a looping answer ends at its first repeated line, or at the third box marching on from the
    # one before, as in `earthgpt detect` and the app (review of 2026-12-04)
    stop_rule = None if args.keep_repeats else detection_stop_rule()
    try:
        answer = session.ask(prompt, max_new_tokens=args.max_new_tokens, stream=not args.json,
                             stop_rule=stop_rule)
    except PromptTooLongError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        report = json_report(
            answer, size, model=args.model, image=str(args.image), sensor=sensor, warning=warning
        )
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    for piece in answer:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def json_report(
    answer: str, size: tuple[int, int], *, model: str, image: str, sensor: str | None, warning: str | None
) -> dict[str, Any]:
    """The ``--json`` output: the answer, its parsed detections (grid and pixel boxes), the boxes
    left out as not usable (label, box as written, reason) and context."""
    from earthgpt.geometry import box_kind, grid_to_pixel
    from earthgpt.textbox import parse_detections

    width, height = size
    parsed = parse_detections(answer)
    detections = [
        {
            "label": det.label,
            "kind": box_kind(det.box),
            "box_grid": det.box.as_list(),
            "box_pixels": [round(v, 2) for v in grid_to_pixel(det.box, width, height).as_list()],
        }
        for det in parsed.detections
    ]
    return {
        "answer": answer,
        "detections": detections,
        "invalid": [{"label": b.label, "box_text": b.text, "reason": b.reason} for b in parsed.invalid],
        "skipped": parsed.skipped,
        "model": model,
        "image": image,
        "sensor": sensor,
        "warning": warning,
    }


def _check_prompt(prompt: str) -> str:
    if not prompt or not prompt.strip():
        raise InputError("the prompt is empty: give a question or instruction")
    if IMAGE_PLACEHOLDER in prompt:
        raise InputError(
            f"the prompt must not contain '{IMAGE_PLACEHOLDER}': the image is placed automatically"
        )
    return prompt.strip()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from error
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value
