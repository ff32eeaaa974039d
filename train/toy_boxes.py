"""A generated grounding set for checking that a model *can* learn to localise: each image is a
noisy dark background with one coloured rectangle, each record asks for that rectangle's box.

    python -m train.toy_boxes --out toy --train 2000 --val 100

writes ``toy/train.jsonl``, ``toy/val.jsonl`` (MMRS records, task ``grounding``, the answer in the
0–1000 grid of docs/FORMATS.md) and ``toy/images/*.png``. Real localisation data (HIT-UAV's
10-pixel people at 224 px) leaves a CPU run at zero whatever it changes; on this set an
architecture that can localise at all shows it within a few hundred steps, so it separates "the
model cannot" from "the data is too hard for so few steps". Deterministic for a ``--seed``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from earthgpt.geometry import HBB, pixel_to_grid
from earthgpt.tasks import Task, instruction
from earthgpt.textbox import format_grounding

COLOURS = {
    "red": (230, 40, 40), "green": (40, 210, 60), "blue": (50, 90, 240), "yellow": (235, 220, 40),
    "white": (245, 245, 245),
}
SIDE = 224
"""Image side in pixels: the nano's input size, so no resize blurs the rectangle's edges."""
SIZES = (16, 96)
"""Shortest and longest rectangle side in pixels (``--sizes``)."""


def toy_record(index: int, split: str, rng: np.random.Generator, folder: Path,
               sizes: tuple[int, int] = SIZES) -> dict:
    """One image (written under ``folder/images``) and its grounding record; the rectangle's sides
    are drawn from ``sizes`` (pixels, both ends included)."""
    background = rng.normal(40, 12, (SIDE // 8, SIDE // 8, 3)).clip(0, 255).astype(np.uint8)
    pixels = np.asarray(Image.fromarray(background).resize((SIDE, SIDE), Image.Resampling.BILINEAR)).copy()
    pixels = (pixels + rng.normal(0, 6, pixels.shape)).clip(0, 255).astype(np.uint8)
    w, h = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, 2))
    x1, y1 = int(rng.integers(0, SIDE - w + 1)), int(rng.integers(0, SIDE - h + 1))
    name = sorted(COLOURS)[int(rng.integers(len(COLOURS)))]
    pixels[y1 : y1 + h, x1 : x1 + w] = COLOURS[name]
    image = f"images/{split}_{index:05d}.png"
    Image.fromarray(pixels).save(folder / image)
    box = HBB(x1, y1, x1 + w, y1 + h)
    referring = f"the {name} rectangle"
    question = "<image>\n" + instruction(Task.grounding, "optical", referring=referring)
    return {
        "id": f"toy_boxes/{split}_{index:05d}", "image_root": "toy_boxes", "image": image,
        "width": SIDE, "height": SIDE, "sensor": "optical", "dataset": "toy_boxes",
        "licence": "generated (train/toy_boxes.py)", "split": split, "tasks": ["grounding"],
        "annotations": {"objects_hbb": [{"label": f"{name} rectangle", "xyxy_px": [x1, y1, x1 + w, y1 + h],
                                         "difficult": False}]},
        "conversations": [
            {"from": "human", "value": question, "task": "grounding", "generated": True},
            {"from": "assistant", "value": format_grounding(pixel_to_grid(box, SIDE, SIDE)),
             "task": "grounding", "generated": True},
        ],
    }


def write_toy_set(folder: Path, train: int, val: int, seed: int = 0,
                  sizes: tuple[int, int] = SIZES) -> dict[str, Path]:
    """Write the set into ``folder``; returns the record file of each split."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = {}
    for split, count in (("train", train), ("val", val)):
        records = [toy_record(i, split, rng, folder, sizes) for i in range(count)]
        paths[split] = folder / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(r) + "\n" for r in records))
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.toy_boxes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write (created)")
    parser.add_argument("--train", type=int, default=2000, help="train images (default 2000)")
    parser.add_argument("--val", type=int, default=100, help="val images (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", type=int, nargs=2, default=list(SIZES), metavar=("MIN", "MAX"),
                        help=f"rectangle sides in pixels, both included (default {SIZES[0]} {SIZES[1]}; "
                        "a HIT-UAV person at 224 px is about 7 x 4)")
    args = parser.parse_args(argv)
    if args.train < 0 or args.val < 0:
        parser.error("--train and --val must not be negative")
    if not 1 <= args.sizes[0] <= args.sizes[1] <= SIDE:
        parser.error(f"--sizes must be 1 <= MIN <= MAX <= {SIDE}")
    paths = write_toy_set(args.out, args.train, args.val, args.seed, tuple(args.sizes))
    print(" ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
