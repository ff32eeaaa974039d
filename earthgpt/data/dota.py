"""DOTA ``labelTxt`` (v1.0 / v1.5): one text file per image, optional header lines
``imagesource:…`` and ``gsd:…``, then one object per line
``x1 y1 x2 y2 x3 y3 x4 y4 class difficult`` (pixel corners, any order).

``PATH`` holds ``images/`` and ``labelTxt/`` (options ``images``, ``labels``), or the official
``train/``, ``val/``, ``test/`` folders each holding them, whose names are then the split; without
those folders the hash split applies. Each object gives an oriented box (corners in the paper's
order) and its enclosing horizontal box, both kept with the difficult flag. A line that is not a
polygon + class is dropped with a warning; a label file without an image is a counted skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from earthgpt.data.records import (
    Sample,
    SkipLog,
    find_image,
    hbb_entry,
    obb_entry,
    readable_class,
    usable_box,
)
from earthgpt.data.sources import Source
from earthgpt.geometry import obb_from_polygon8

OPTIONS: dict[str, str] = {
    "images": "image folder name (default images)",
    "labels": "label folder name (default labelTxt)",
}
_HEADERS = ("imagesource:", "gsd:")


def parse_label_file(text: str) -> tuple[list[tuple[str, list[float], bool]], list[str]]:
    """``([(class, polygon8, difficult)], [bad lines])`` of one labelTxt file's text."""
    objects, bad = [], []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.lower().startswith(_HEADERS):
            continue
        parts = line.split()
        try:
            polygon = [float(v) for v in parts[:8]]
        except ValueError:
            bad.append(line)
            continue
        if len(parts) < 9:
            bad.append(line)
            continue
        difficult = len(parts) > 9 and parts[9] == "1"
        objects.append((parts[8], polygon, difficult))
    return objects, bad


def _annotations(source: Source, log: SkipLog, label_file: Path) -> dict[str, Any] | None:
    try:
        text = label_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        log.skip(source.label, "label file unreadable", label_file.name)
        return None
    objects, bad = parse_label_file(text)
    for _ in bad:
        log.warn(source.label, "label line is not 8 numbers + class (dropped)", label_file.name)
    hbbs, obbs = [], []
    excluded = source.excluded_classes
    for name, polygon, difficult in objects:
        if name in excluded:
            continue
        try:
            obb = obb_from_polygon8(polygon)
        except ValueError:
            obb = None
        if obb is None or not usable_box(obb):
            log.warn(source.label, "degenerate polygon (object dropped)", label_file.name)
            continue
        label = readable_class(name)
        obbs.append(obb_entry(label, obb, difficult))
        hbbs.append(hbb_entry(label, obb.to_hbb(), difficult))
    return {"objects_hbb": hbbs, "objects_obb": obbs}


def _folders(source: Source) -> list[tuple[Path, str | None]]:
    """``[(folder holding images/ and labelTxt/, official split or None)]``."""
    labels = source.opt("labels") or "labelTxt"
    if (source.path / labels).is_dir():
        return [(source.path, None)]
    found = [(source.path / s, s) for s in ("train", "val", "test") if (source.path / s / labels).is_dir()]
    if not found:
        raise ValueError(f"{source.label}: expected {labels}/ (or train|val|test/{labels}/) in {source.path}")
    return found


def convert(source: Source, log: SkipLog) -> Iterator[Sample]:
    """One sample per label file with an image: ``{"objects_hbb": [...], "objects_obb": [...]}``."""
    for folder, split in _folders(source):
        images = folder / (source.opt("images") or "images")
        for label_file in sorted((folder / (source.opt("labels") or "labelTxt")).glob("*.txt")):
            image = find_image(images, label_file.stem)
            if image is None:
                log.skip(source.label, "image file missing", f"{label_file.parent.name}/{label_file.name}")
                continue
            annotations = _annotations(source, log, label_file)
            if annotations is None:
                continue
            sample = source.make_sample(log, image, label_file.stem, split, annotations)
            if sample is not None:
                yield sample
