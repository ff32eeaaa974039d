"""Caption sets in the Karpathy json layout: RSICD (``dataset_rsicd.json``), UCM-Captions and
Sydney-Captions (``dataset.json``), and Karpathy's COCO/Flickr files.

``{"images": [{"filename", "filepath"?, "split", "sentences": [{"raw", …}]}]}``. ``PATH`` is the
json file (or its folder when that holds one ``*.json``); images are looked up in the ``images``
option's folder next to it (default: the first of ``images``, ``RSICD_images``, ``imgs``,
``Images`` that exists) joined with ``filepath`` when an item has one. The item's ``split`` is the
official split (``restval`` counts as ``train``). Duplicate captions of an image are removed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from earthgpt.data.records import Sample, SkipLog, unique_captions
from earthgpt.data.sources import Source

OPTIONS: dict[str, str] = {
    "images": "image folder, relative to the json's folder (default: images, RSICD_images, imgs or Images)",
}
_IMAGE_DIRS = ("images", "RSICD_images", "imgs", "Images")


def json_file(source: Source, pattern: str = "*.json") -> Path:
    """``PATH`` itself when a file, else the only file matching ``pattern`` in it."""
    if source.path.is_file():
        return source.path
    found = sorted(source.path.glob(pattern))
    if len(found) != 1:
        raise ValueError(
            f"{source.label}: expected a json file or a folder with one {pattern}, found {len(found)}"
        )
    return found[0]


def image_folder(source: Source, defaults: tuple[str, ...] = _IMAGE_DIRS) -> Path:
    """The ``images`` option's folder, else the first existing default folder, else the root."""
    name = source.opt("images")
    if name is not None:
        return source.root_dir / name
    for candidate in defaults:
        if (source.root_dir / candidate).is_dir():
            return source.root_dir / candidate
    return source.root_dir


def load_json(source: Source, log: SkipLog, path: Path) -> Any | None:
    """The parsed json file, or None with a counted skip when it is missing or malformed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.skip(source.label, f"annotation file unreadable ({type(err).__name__})", path.name)
        return None


def convert(source: Source, log: SkipLog) -> Iterator[Sample]:
    """One sample per image: ``{"captions": [unique captions]}``."""
    data = load_json(source, log, json_file(source))
    if data is None:
        return
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        log.skip(source.label, "no 'images' list in the Karpathy json", json_file(source).name)
        return
    folder = image_folder(source)
    for item in images:
        if not isinstance(item, dict) or not isinstance(item.get("filename"), str):
            log.skip(source.label, "image entry without a filename", str(item)[:60])
            continue
        captions = unique_captions(
            s["raw"]
            for s in item.get("sentences", [])
            if isinstance(s, dict) and isinstance(s.get("raw"), str)
        )
        if not captions:
            log.skip(source.label, "image without captions", item["filename"])
            continue
        image = folder / item.get("filepath", "") / item["filename"]
        split = {"restval": "train"}.get(item.get("split"), item.get("split"))
        key = Path(item["filename"]).stem
        sample = source.make_sample(log, image, key, split, {"captions": captions})
        if sample is not None:
            yield sample
