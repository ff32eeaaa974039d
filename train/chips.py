"""Chips of an MMRS set's labelled images: more pixels per object for the box tasks.

    python -m train.chips --data mmrs --out chips --size 320 --datasets hit_uav --train-per-image 1

The nano sees every image at 224 × 224, so a HIT-UAV person (about 20 × 10 px in a 640 × 512
frame) covers 7 × 3 px, a fraction of one of the 16 × 16 visual tokens. This cuts each image that
has a complete horizontal-box labelling (``objects_hbb``) into ``--size``-pixel chips laid evenly
over it (overlapping where the size does not divide the image), keeps each object whose box has at
least half of its area inside a chip (clipped to the chip), and writes every chip as an MMRS
record with the turns the builder writes for such a labelling (``earthgpt.data.builder.to_record``:
HBB detection, counts and presence, grounding of a class unique in the chip, region captions).
A 320-px chip of a HIT-UAV frame is seen at 0.7 of its pixels instead of 0.35.

Writes ``OUT/train.jsonl``, ``OUT/val.jsonl`` (every split present in the input) and
``OUT/images/*.png``; ids are ``<source id>/chip_<x>_<y>``. ``--train-per-image K`` keeps K chips
of each train image (those with objects first, then by a hash of the id), every chip of the other
splits. Rotated boxes are not carried over (a rotated box cut by a chip edge has no exact clipped
form), nor are class labels, captions, questions and referring expressions of the whole image.
Deterministic for the same input.

``--one-object`` cuts instead one chip around each object that no other object's box touches
within ``--size`` pixels: the chip holds that object whole, at a place drawn from a hash of its id
(so the answer is not always the chip's centre), and nothing else that is labelled. That is the
toy set's question (one object, ask where it is) on real frames: the step between
``python -m train.toy_boxes`` and the many-object chips in a grounding curriculum.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from earthgpt.data.builder import to_record, write_jsonl
from earthgpt.data.image_resolver import ImageResolver
from earthgpt.data.mmrs_reader import DataError, read_records
from earthgpt.data.records import Sample
from earthgpt.sensors import Sensor

MIN_INSIDE = 0.5
"""Share of an object's box area that must lie inside a chip for the chip to keep it."""


def offsets(length: int, size: int) -> list[int]:
    """Chip starts along one side: the fewest that cover ``length``, spread evenly, the last flush
    with the end; one chip at 0 when the side is not longer than ``size``."""
    if length <= size:
        return [0]
    count = math.ceil((length - size) / size) + 1
    return [round(i * (length - size) / (count - 1)) for i in range(count)]


def chip_objects(
    objects: list[dict[str, Any]], x: int, y: int, width: int, height: int
) -> list[dict[str, Any]]:
    """The objects a chip at (x, y) of this size keeps, their boxes clipped to it and in its pixels."""
    kept = []
    for obj in objects:
        x1, y1, x2, y2 = obj["xyxy_px"]
        area = (x2 - x1) * (y2 - y1)
        cx1, cy1 = max(x1, x), max(y1, y)
        cx2, cy2 = min(x2, x + width), min(y2, y + height)
        if area <= 0 or cx2 <= cx1 or cy2 <= cy1 or (cx2 - cx1) * (cy2 - cy1) < MIN_INSIDE * area:
            continue
        box = [cx1 - x, cy1 - y, cx2 - x, cy2 - y]
        kept.append({**obj, "xyxy_px": [int(v) if float(v).is_integer() else round(v, 2) for v in box]})
    return kept


def _rank(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _chip(
    record: dict[str, Any], name: str, image: str, width: int, height: int, objects: list[dict[str, Any]]
) -> Sample:
    """The sample of one chip of ``record``: id ``<record id>/<name>``, image ``images/<image>.png``."""
    return Sample(
        id=f"{record['id']}/{name}",
        image_root="chips",
        image=f"images/{image}.png",
        width=width,
        height=height,
        sensor=Sensor(record["sensor"]),
        dataset=record["dataset"],
        licence=record["licence"],
        split=record["split"],
        annotations={"objects_hbb": objects},
    )


def chip_samples(record: dict[str, Any], size: int) -> list[tuple[Sample, tuple[int, int]]]:
    """The chips of one record, as samples with the (x, y) of their top-left corner."""
    width, height = int(record["width"]), int(record["height"])
    objects = record["annotations"]["objects_hbb"]
    out = []
    stem = record["id"].replace("/", "_")
    for y in offsets(height, size):
        for x in offsets(width, size):
            w, h = min(size, width - x), min(size, height - y)
            kept = chip_objects(objects, x, y, w, h)
            out.append((_chip(record, f"chip_{x}_{y}", f"{stem}_{x}_{y}", w, h, kept), (x, y)))
    return out


def _unit(key: str) -> float:
    """A number in [0, 1) drawn from a hash of ``key``."""
    return int(_rank(key)[:8], 16) / 16**8


def _overlaps(box: list[float], x: int, y: int, width: int, height: int) -> bool:
    return box[0] < x + width and box[2] > x and box[1] < y + height and box[3] > y


def one_object_samples(record: dict[str, Any], size: int) -> list[tuple[Sample, tuple[int, int]]]:
    """One chip of side ``size`` (or the image's side, where smaller) around each object whose
    whole box fits in it and that no other object's box reaches: the chip's only object, placed
    at a hashed spot."""
    width, height = int(record["width"]), int(record["height"])
    cw, ch = min(size, width), min(size, height)
    objects = record["annotations"]["objects_hbb"]
    out = []
    stem = record["id"].replace("/", "_")
    for index, obj in enumerate(objects):
        x1, y1, x2, y2 = obj["xyxy_px"]
        if x2 - x1 > cw or y2 - y1 > ch or x2 <= x1 or y2 <= y1:
            continue
        key = f"{record['id']}/{index}"
        lo_x, hi_x = max(0, math.ceil(x2) - cw), min(int(x1), width - cw)
        lo_y, hi_y = max(0, math.ceil(y2) - ch), min(int(y1), height - ch)
        if hi_x < lo_x or hi_y < lo_y:
            continue
        x = lo_x + int(_unit(key + "x") * (hi_x - lo_x + 1))
        y = lo_y + int(_unit(key + "y") * (hi_y - lo_y + 1))
        reached = [o for o in objects if _overlaps(o["xyxy_px"], x, y, cw, ch)]
        if len(reached) != 1:
            continue
        kept = chip_objects([obj], x, y, cw, ch)
        out.append((_chip(record, f"object_{index}", f"{stem}_o{index}", cw, ch, kept), (x, y)))
    return out


def write_chips(
    data: Path,
    out: Path,
    size: int,
    datasets: Sequence[str] = (),
    train_per_image: int = 0,
    one_object: bool = False,
) -> dict[str, int]:
    """Write the chip set; returns the records written per split."""
    records = [
        r for r in read_records(data)
        if r.get("annotations", {}).get("objects_hbb") and (not datasets or r["dataset"] in datasets)
    ]  # fmt: skip
    if not records:
        where = f" in {', '.join(datasets)}" if datasets else ""
        raise DataError(f"{data}: no record with horizontal boxes (objects_hbb){where}")
    labels: dict[str, set[str]] = {}
    for record in records:
        labels.setdefault(record["dataset"], set()).update(
            o["label"] for o in record["annotations"]["objects_hbb"]
        )
    vocab = {dataset: sorted(names) for dataset, names in labels.items()}
    resolver = ImageResolver([data if data.is_dir() else data.parent])
    (out / "images").mkdir(parents=True, exist_ok=True)
    by_split: dict[str, list[dict[str, Any]]] = {}
    for record in sorted(records, key=lambda r: r["id"]):
        chips = one_object_samples(record, size) if one_object else chip_samples(record, size)
        if record["split"] == "train" and train_per_image > 0:
            chips = sorted(chips, key=lambda c: (not c[0].annotations["objects_hbb"], _rank(c[0].id)))
            chips = chips[:train_per_image]
        image = None
        for sample, (x, y) in chips:
            written = to_record(sample, vocab[sample.dataset])
            if written is None:
                continue
            if image is None:
                with Image.open(resolver(record)) as source:
                    image = source.convert("RGB")
            image.crop((x, y, x + sample.width, y + sample.height)).save(out / sample.image)
            by_split.setdefault(sample.split, []).append(written)
    return {split: write_jsonl(rows, out / f"{split}.jsonl") for split, rows in sorted(by_split.items())}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.chips", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="MMRS records: a .jsonl file or a folder")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (created)")
    parser.add_argument("--size", type=int, default=320, help="chip side in pixels (default 320)")
    parser.add_argument(
        "--datasets", nargs="+", default=[], help="only these datasets (default: all with boxes)"
    )
    parser.add_argument("--train-per-image", type=int, default=0, help="chips kept per train image (0: all)")
    parser.add_argument(
        "--one-object", action="store_true", help="one chip around each object no other object reaches"
    )
    args = parser.parse_args(argv)
    if args.size < 32:
        parser.error("--size must be at least 32 pixels")
    if args.train_per_image < 0:
        parser.error("--train-per-image must not be negative")
    try:
        counts = write_chips(
            args.data, args.out, args.size, args.datasets, args.train_per_image, args.one_object
        )
    except (DataError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
