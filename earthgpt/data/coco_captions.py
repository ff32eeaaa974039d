"""Caption sets in the COCO captions json layout (``captions_train2017.json`` and the like):
``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``.

``PATH`` is the json file or the dataset folder; in a folder the ``annotations`` option (a glob,
default ``annotations/captions_*.json``) names the json files. Images are found in the ``images``
option's folder (relative to the dataset folder), else in ``images/``, else in the folder named
after the json's split (``captions_val2017.json`` → ``val2017/``). The split comes from the json
file name (train / val / test), else the hash split. Duplicate captions are removed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from earthgpt.data.karpathy import load_json
from earthgpt.data.records import Sample, SkipLog, split_from_name, unique_captions
from earthgpt.data.sources import Source

OPTIONS: dict[str, str] = {
    "annotations": "glob of caption json files relative to PATH (default annotations/captions_*.json)",
    "images": "image folder relative to PATH (default images/, else the json's split folder, e.g. val2017/)",
}


def annotation_files(source: Source, default: str) -> list[Path]:
    """``PATH`` when it is a file, else the files the ``annotations`` glob matches (sorted)."""
    if source.path.is_file():
        return [source.path]
    files = sorted(source.path.glob(source.opt("annotations") or default))
    if not files:
        raise ValueError(
            f"{source.label}: no annotation json matches {source.opt('annotations') or default!r}"
        )
    return files


def coco_image_folder(source: Source, json_path: Path) -> Path:
    """Where the images of one COCO json are (see the module doc)."""
    if source.opt("images"):
        return source.root_dir / source.opt("images")
    if (source.root_dir / "images").is_dir():
        return source.root_dir / "images"
    match = re.search(r"(train|val|test)\d*$", json_path.stem)
    if match and (source.root_dir / match.group(0)).is_dir():
        return source.root_dir / match.group(0)
    return source.root_dir


def load_coco_json(source: Source, log: SkipLog, json_path: Path) -> dict[str, Any] | None:
    """A COCO json with its ``images`` list, or None (logged as skipped) when it is unreadable or
    has none."""
    data = load_json(source, log, json_path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        if data is not None:
            log.skip(source.label, "no 'images' list in the COCO json", json_path.name)
        return None
    return data


def convert(source: Source, log: SkipLog) -> Iterator[Sample]:
    """One sample per image with at least one caption: ``{"captions": [unique captions]}``."""
    for json_path in annotation_files(source, "annotations/captions_*.json"):
        data = load_coco_json(source, log, json_path)
        if data is None:
            continue
        captions: dict[object, list[str]] = {}
        for ann in data.get("annotations", []):
            if isinstance(ann, dict) and isinstance(ann.get("caption"), str):
                captions.setdefault(ann.get("image_id"), []).append(ann["caption"])
        folder = coco_image_folder(source, json_path)
        split = split_from_name(json_path.stem)
        for item in sorted(
            data["images"], key=lambda i: str(i.get("file_name", "")) if isinstance(i, dict) else ""
        ):
            if not isinstance(item, dict) or not isinstance(item.get("file_name"), str):
                log.skip(source.label, "image entry without a file_name", json_path.name)
                continue
            texts = unique_captions(captions.get(item.get("id"), []))
            if not texts:
                log.skip(source.label, "image without captions", item["file_name"])
                continue
            sample = source.make_sample(
                log, folder / item["file_name"], Path(item["file_name"]).stem, split, {"captions": texts}
            )
            if sample is not None:
                yield sample
