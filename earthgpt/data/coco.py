"""Object detection in the COCO json layout (SSDD ``coco/``, COCO ``instances_*.json``):
``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "bbox": [x, y, w, h],
"category_id", "iscrowd"?}], "categories": [{"id", "name"}]}``.

``PATH`` is the json file or the dataset folder; in a folder the ``annotations`` option (a glob,
default ``annotations/*.json``) names the json files and ``images`` the image folder (default
``images/``, else the json's split folder such as ``val2017/``). The split comes from the json
file name (SSDD ``train.json`` / ``test.json``), else the hash split. Crowd regions are left out.
Every image of the json becomes a sample, also one without objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from earthgpt.data.coco_captions import annotation_files, coco_image_folder, load_coco_json
from earthgpt.data.records import Sample, SkipLog, hbb_entry, readable_class, split_from_name, usable_box
from earthgpt.data.sources import Source
from earthgpt.geometry import HBB

OPTIONS: dict[str, str] = {
    "annotations": "glob of COCO json files relative to PATH (default annotations/*.json)",
    "images": "image folder relative to PATH (default images/, else the json's split folder)",
    "exclude": "comma-separated category names to leave out",
}


def _objects(
    source: Source, log: SkipLog, data: dict[str, Any], name: str
) -> dict[object, list[dict[str, Any]]]:
    """Object entries of every image id, in annotation id order."""
    categories = {c.get("id"): str(c.get("name")) for c in data.get("categories", []) if isinstance(c, dict)}
    by_image: dict[object, list[dict[str, Any]]] = {}
    annotations = [a for a in data.get("annotations", []) if isinstance(a, dict)]
    for ann in sorted(annotations, key=lambda a: (str(a.get("image_id")), str(a.get("id")))):
        if ann.get("iscrowd"):
            continue
        category = categories.get(ann.get("category_id"))
        if category is None or category in source.excluded_classes:
            if category is None:
                log.warn(source.label, "annotation with an unknown category (dropped)", name)
            continue
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
            box = HBB(x, y, x + w, y + h)
        except (KeyError, TypeError, ValueError):
            box = None
        if box is None or not usable_box(box):
            log.warn(source.label, "annotation without a usable bbox (dropped)", name)
            continue
        by_image.setdefault(ann.get("image_id"), []).append(hbb_entry(readable_class(category), box))
    return by_image


def convert(source: Source, log: SkipLog) -> Iterator[Sample]:
    """One sample per image of each json: ``{"objects_hbb": [...]}``."""
    for json_path in annotation_files(source, "annotations/*.json"):
        data = load_coco_json(source, log, json_path)
        if data is None:
            continue
        objects = _objects(source, log, data, json_path.name)
        folder = coco_image_folder(source, json_path)
        split = split_from_name(json_path.stem)
        images = [i for i in data["images"] if isinstance(i, dict) and isinstance(i.get("file_name"), str)]
        for item in sorted(images, key=lambda i: i["file_name"]):
            key = Path(item["file_name"]).stem
            sample = source.make_sample(
                log, folder / item["file_name"], key, split, {"objects_hbb": objects.get(item.get("id"), [])}
            )
            if sample is not None:
                yield sample
