"""Do the visual tokens say where the objects are? A linear probe per token, before any LLM training.

    python -m train.objectness_probe --data mmrs --model nano --datasets hit_uav --tile 0 \\
        --train-images 300 --out reports/objectness_hit_uav_full.json

Grounding and detection need the LLM to read an object's place off the visual tokens. When a
model fails at them, this says whether the place is in the tokens at all: a logistic regression
per token predicts "an object's centre lies in this token's cell" from

- ``vision``: the frozen encoders' tokens (what the projector sees, ViT layers and CNN maps);
- ``projected``: the projector's output (what the LLM sees);
- ``pixels``: eight statistics of the cell's pixels in the image the model sees (mean, max, min,
  spread, and the mean and max against the image's mean and the 3 × 3 cells around it), a probe
  that needs no network: an infrared person is a small bright spot.

``--classes person`` asks about one class: only its objects' centres are positive, and the cells
other objects touch are left out.

Images are the records of ``--data`` with horizontal boxes (``objects_hbb``), cut into tiles of
``--tile`` pixels as ``python -m train.chips`` cuts them (0: the whole image, as grounding and
detection see it). Each tile is resized to the model's input, so a smaller tile gives each object
more pixels and more tokens. A cell is positive when it holds the centre of an object the tile
keeps (``train.chips.chip_objects``), negative when no object's box touches it; cells that touch a
box without holding its centre are left out of both.

The probe is fitted on train tiles (every positive cell and ``--negatives`` random negative cells
of each tile; the L2 weight is picked by ROC AUC on a held-out fifth of the tiles) and scored on
every cell of the val tiles: ROC AUC, average precision against the share of positives, and
**pointing**: in how many val tiles with an object the highest-scoring cell touches an object's box,
against the share of such cells (what a random cell scores). Writes JSON; prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from earthgpt.data.image_resolver import ImageResolver
from earthgpt.data.mmrs_reader import DataError, read_records
from earthgpt.eval.predictor import read_rgb
from earthgpt.eval.probe import fit_logistic, standardise
from train.chips import chip_objects, offsets

KINDS = ("vision", "projected", "pixels")
L2_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
HOLDOUT_EVERY = 5


@dataclass
class Tile:
    """One tile's pixels (the model's preprocessed input) and its cell labels."""

    pixels: torch.Tensor
    gray: np.ndarray
    """The tile as the model sees it, grey levels in [0, 1], ``(S, S)``."""
    labels: np.ndarray
    """Per cell, row-major: 1 holds an object's centre, 0 touches no box, -1 left out."""
    touched: np.ndarray
    """Per cell: True where an object's box touches the cell."""


def cell_labels(
    objects: Sequence[dict[str, Any]], width: int, height: int, grid: int,
    others: Sequence[dict[str, Any]] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, touched)`` of a ``grid`` × ``grid`` token grid over a ``width`` × ``height`` tile
    (row-major, as the visual tokens are ordered): see :class:`Tile`. The cells that ``others``
    (objects of classes not asked about) touch are left out too, unless they hold a centre of
    ``objects``."""
    sx, sy = grid / width, grid / height

    def mark(boxes: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        touched = np.zeros((grid, grid), dtype=bool)
        centre = np.zeros((grid, grid), dtype=bool)
        for obj in boxes:
            x1, y1, x2, y2 = (float(v) for v in obj["xyxy_px"])
            c1, r1 = math.floor(x1 * sx), math.floor(y1 * sy)
            c2, r2 = math.ceil(x2 * sx) - 1, math.ceil(y2 * sy) - 1
            touched[max(r1, 0):min(r2, grid - 1) + 1, max(c1, 0):min(c2, grid - 1) + 1] = True
            col = min(grid - 1, max(0, int((x1 + x2) / 2 * sx)))
            row = min(grid - 1, max(0, int((y1 + y2) / 2 * sy)))
            centre[row, col] = True
        return touched, centre

    touched, centre = mark(objects)
    left_out = touched | mark(others)[0]
    labels = np.where(centre, 1, np.where(left_out, -1, 0)).astype(np.int8)
    return labels.reshape(-1), touched.reshape(-1)


def pixel_features(gray: np.ndarray, grid: int) -> np.ndarray:
    """Eight statistics per cell of a ``(S, S)`` grey image: ``(grid², 8)``."""
    size = gray.shape[0] // grid
    cells = gray[: size * grid, : size * grid].reshape(grid, size, grid, size).transpose(0, 2, 1, 3)
    cells = cells.reshape(grid, grid, size * size)
    mean, peak, low, spread = cells.mean(-1), cells.max(-1), cells.min(-1), cells.std(-1)
    padded = np.pad(mean, 1, mode="edge")
    around = sum(padded[1 + dr: 1 + dr + grid, 1 + dc: 1 + dc + grid]
                 for dr in (-1, 0, 1) for dc in (-1, 0, 1)) / 9.0
    overall = gray.mean()
    stats = [mean, peak, low, spread, mean - overall, peak - overall, mean - around, peak - around]
    return np.stack(stats, axis=-1).reshape(grid * grid, 8).astype(np.float32)


def iter_tiles(records: Sequence[dict[str, Any]], resolver: Callable[[dict[str, Any]], Path], tile: int,
               preprocess: Callable[[np.ndarray], torch.Tensor], grid: int,
               classes: Sequence[str] = ()) -> Iterator[Tile]:
    """The tiles of each record in order (``tile`` 0: the whole image); with ``classes``, only
    objects of those classes are positive (:func:`cell_labels`)."""
    for record in records:
        rgb = read_rgb(resolver(record), record.get("sensor"))
        height, width = rgb.shape[:2]
        objects = record["annotations"]["objects_hbb"]
        xs = offsets(width, tile) if tile else [0]
        ys = offsets(height, tile) if tile else [0]
        for y in ys:
            for x in xs:
                w, h = (min(tile, width - x), min(tile, height - y)) if tile else (width, height)
                crop = np.ascontiguousarray(rgb[y:y + h, x:x + w])
                kept = chip_objects(objects, x, y, w, h)
                asked = [o for o in kept if not classes or o["label"] in classes]
                others = [o for o in kept if classes and o["label"] not in classes]
                labels, touched = cell_labels(asked, w, h, grid, others)
                pixels = preprocess(crop)
                size = pixels.shape[-1]
                grey = Image.fromarray(crop).convert("L").resize((size, size), Image.Resampling.BICUBIC)
                seen = np.asarray(grey, dtype=np.float32) / 255.0
                yield Tile(pixels, seen, labels, touched)


def token_features(model: Any, tiles: Sequence[Tile], grid: int) -> dict[str, np.ndarray]:
    """Each kind's features of every cell of ``tiles``: ``(len(tiles), grid², C)`` float32."""
    pixels = torch.stack([t.pixels for t in tiles])
    first = next(model.projector.parameters())
    with torch.inference_mode():
        vision = model.vision(pixels.to(device=first.device, dtype=first.dtype))
        projected = model.projector(vision)
    return {
        "vision": vision.float().cpu().numpy(),
        "projected": projected.float().cpu().numpy(),
        "pixels": np.stack([pixel_features(t.gray, grid) for t in tiles]),
    }


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count half), from ranks."""
    labels = labels.astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):  # average ranks over ties
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return float((ranks[labels].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean precision at each positive, cells ranked by score (highest first)."""
    labels = labels.astype(bool)
    if not labels.any():
        return float("nan")
    hits = labels[np.argsort(-scores, kind="mergesort")]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


@dataclass
class Probe:
    """A fitted probe: standardisation and the logistic weights of one feature kind."""

    mean: np.ndarray
    std: np.ndarray
    weight: np.ndarray
    l2: float
    holdout_auc: dict[float, float]

    def score(self, x: np.ndarray) -> np.ndarray:
        """Logit of "holds an object's centre" for each row of ``x``."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.std
        return z @ self.weight[:-1] + self.weight[-1]


def fit_probe(x: np.ndarray, y: np.ndarray, group: np.ndarray, grid: Sequence[float] = L2_GRID) -> Probe:
    """Logistic regression of ``y`` (0/1) on ``x``; ``l2`` picked by AUC on the rows whose ``group``
    (tile index) is ``4 mod 5``, then refitted on all rows."""
    held = group % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
    if not held.any() or held.all() or len(set(y[held].tolist())) < 2:
        raise ValueError("need positives and negatives in at least five training tiles to pick the L2 weight")
    fit_x, held_x = standardise(x[~held], x[held])
    aucs = {}
    for l2 in grid:
        weight, bias = fit_logistic(fit_x, y[~held], 2, l2)
        logits = torch.as_tensor(held_x) @ weight + bias
        aucs[l2] = roc_auc((logits[:, 1] - logits[:, 0]).numpy(), y[held])
    l2 = max(aucs, key=lambda v: (aucs[v], v))
    all_x = np.asarray(x, dtype=np.float64)
    mean, std = all_x.mean(axis=0), all_x.std(axis=0)
    std[std == 0] = 1.0  # as standardise does
    weight, bias = fit_logistic((all_x - mean) / std, y, 2, l2)
    w = torch.cat([weight[:, 1] - weight[:, 0], (bias[1] - bias[0]).reshape(1)]).numpy()
    return Probe(mean, std, w, l2, aucs)


def run(model: Any, preprocess: Callable[[np.ndarray], torch.Tensor], train: Sequence[dict[str, Any]],
        val: Sequence[dict[str, Any]], resolver: Callable[[dict[str, Any]], Path], *, tile: int,
        negatives: int = 24, batch_size: int = 16, seed: int = 0, kinds: Sequence[str] = KINDS,
        classes: Sequence[str] = (), progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fit each kind's probe on ``train``'s tiles and score it on ``val``'s (module doc)."""
    grid = round(math.sqrt(model.config.num_visual_tokens))
    if grid * grid != model.config.num_visual_tokens:
        raise ValueError(f"expected a square token grid, got {model.config.num_visual_tokens} visual tokens")
    rng = np.random.default_rng(seed)
    rows: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    targets, groups = [], []
    tiles_seen = 0
    for batch in _batches(iter_tiles(train, resolver, tile, preprocess, grid, classes), batch_size):
        features = token_features(model, batch, grid)
        for i, t in enumerate(batch):
            pos = np.flatnonzero(t.labels == 1)
            neg = np.flatnonzero(t.labels == 0)
            neg = rng.choice(neg, size=min(negatives, len(neg)), replace=False) if len(neg) else neg
            keep = np.concatenate([pos, neg])
            for k in kinds:
                rows[k].append(features[k][i, keep])
            targets.append(np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]).astype(np.int64))
            groups.append(np.full(len(keep), tiles_seen))
            tiles_seen += 1
        if progress:
            progress(f"train tiles: {tiles_seen}")
    y, group = np.concatenate(targets), np.concatenate(groups)
    if not (y == 1).any():
        raise DataError("no training tile holds an object")
    probes = {k: fit_probe(np.concatenate(rows[k]), y, group) for k in kinds}
    scores: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    labels, touched = [], []
    for batch in _batches(iter_tiles(val, resolver, tile, preprocess, grid, classes), batch_size):
        features = token_features(model, batch, grid)
        for i, t in enumerate(batch):
            for k in kinds:
                scores[k].append(probes[k].score(features[k][i]))
            labels.append(t.labels)
            touched.append(t.touched)
        if progress:
            progress(f"val tiles: {len(labels)}")
    label_grid, touched_grid = np.stack(labels), np.stack(touched)
    scored = label_grid >= 0
    with_object = (label_grid == 1).any(axis=1)
    report: dict[str, Any] = {
        "tile": tile, "grid": grid, "classes": list(classes),
        "train_tiles": tiles_seen, "val_tiles": len(labels),
        "train_cells": len(y), "train_positive_cells": int(y.sum()),
        "val_cells": int(scored.sum()), "val_positive_cells": int((label_grid == 1).sum()),
        "val_tiles_with_object": int(with_object.sum()),
        "positive_share": float((label_grid == 1).sum() / scored.sum()),
        "pointing_chance": float(touched_grid[with_object].mean()) if with_object.any() else float("nan"),
        "kinds": {},
    }
    for k in kinds:
        grid_scores = np.stack(scores[k])
        flat_scores, flat_labels = grid_scores[scored], label_grid[scored]
        top = grid_scores[with_object].argmax(axis=1)
        pointing = touched_grid[with_object][np.arange(len(top)), top]
        report["kinds"][k] = {
            "auc": roc_auc(flat_scores, flat_labels), "ap": average_precision(flat_scores, flat_labels),
            "pointing": float(pointing.mean()) if len(top) else float("nan"),
            "l2": probes[k].l2, "holdout_auc": {str(a): b for a, b in probes[k].holdout_auc.items()},
            "features": int(probes[k].weight.shape[0] - 1),
        }
    return report


def _batches(tiles: Iterator[Tile], size: int) -> Iterator[list[Tile]]:
    batch: list[Tile] = []
    for t in tiles:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def select(
    records: Sequence[dict[str, Any]], split: str, datasets: Sequence[str], limit: int
) -> list[dict[str, Any]]:
    """The split's records with horizontal boxes (of ``datasets``, if given), by id; the first
    ``limit`` of them (0: all)."""
    chosen = sorted(
        (r for r in records if r.get("split") == split and r.get("annotations", {}).get("objects_hbb")
         and (not datasets or r.get("dataset") in datasets)),
        key=lambda r: r["id"])
    return chosen[:limit] if limit else chosen


def table(report: dict[str, Any]) -> str:
    """The report as a Markdown table."""
    lines = [
        f"tile {report['tile'] or 'whole image'}, {', '.join(report['classes']) or 'every object'}: "
        f"{report['val_tiles']} val tiles "
        f"({report['val_tiles_with_object']} with an object), {report['val_positive_cells']} positive "
        f"of {report['val_cells']} scored cells (share {report['positive_share']:.4f}); pointing by "
        f"chance {report['pointing_chance']:.3f}",
        "",
        "| features | ROC AUC | AP | pointing | L2 |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, r in report["kinds"].items():
        lines.append(f"| {kind} ({r['features']}) | {r['auc']:.3f} | {r['ap']:.3f} | {r['pointing']:.3f} "
                     f"| {r['l2']:g} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.objectness_probe", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--data", type=Path, required=True, help="MMRS records: a folder or .jsonl file")
    parser.add_argument("--model", default="nano", help="preset name or checkpoint folder (default nano)")
    parser.add_argument("--datasets", nargs="+", default=[], help="only these datasets (default: all)")
    parser.add_argument("--tile", type=int, default=0, help="tile side in pixels; 0: whole images (default)")
    parser.add_argument("--train-images", type=int, default=300, help="train images to fit on (0: all)")
    parser.add_argument("--val-images", type=int, default=0, help="val images to score (0: all)")
    parser.add_argument("--classes", nargs="+", default=[],
                        help="only objects of these labels are positive (default: every object)")
    parser.add_argument("--negatives", type=int, default=24, help="negative cells sampled per train tile")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    args = parser.parse_args(argv)
    if args.tile and args.tile < 32:
        parser.error("--tile must be 0 or at least 32 pixels")
    if args.threads:
        torch.set_num_threads(args.threads)
    from earthgpt.inference import load_model

    try:
        records = read_records(args.data)
        train = select(records, "train", args.datasets, args.train_images)
        val = select(records, "val", args.datasets, args.val_images)
        if not train or not val:
            raise DataError(f"{args.data}: need train and val records with horizontal boxes (objects_hbb)")
        model, processor = load_model(args.model, device="cpu")
        resolver = ImageResolver([args.data if args.data.is_dir() else args.data.parent])
        report = run(model, processor.preprocess_image, train, val, resolver, tile=args.tile,
                     negatives=args.negatives, classes=args.classes,
                     progress=lambda m: print(m, file=sys.stderr, flush=True))
    except (DataError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report.update(model=args.model, data=str(args.data), datasets=args.datasets,
                  train_images=len(train), val_images=len(val))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
