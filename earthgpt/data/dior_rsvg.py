"""DIOR-RSVG visual grounding: VOC-like XML per image whose objects carry a ``bndbox`` and a
``description`` (the referring expression), plus the official split id lists.

The lists (``train.txt``/``val.txt``/``test.txt``, or ``split_train.txt`` … as in the project's
sample) hold indices into the sequence of *all objects* of all XML files, taken in file-name order
and object order inside a file, as the dataset's own loader counts them. So one image may have
objects in several splits: it then gives one sample per split, with ids ``dior_rsvg/<stem>/<split>``.
An object in no list is dropped with a warning. ``PATH`` is the dataset folder; XML files are in
``annotations`` (default ``Annotations/`` if it exists, else ``PATH``), images in ``images``
(default ``JPEGImages/`` if it exists, else ``PATH``), lists in ``splits`` (default ``PATH``).
Each object gives ``{"expression", "label", "xyxy_px"}`` in ``annotations["referring"]``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from earthgpt.data.records import Sample, SkipLog, find_image, px, readable_class, usable_box
from earthgpt.data.sources import Source
from earthgpt.data.voc import read_hbb

OPTIONS: dict[str, str] = {
    "annotations": "XML folder relative to PATH (default Annotations/ if present, else PATH)",
    "images": "image folder relative to PATH (default JPEGImages/ if present, else PATH)",
    "splits": "folder of the split id lists relative to PATH (default PATH)",
}


def _folder(source: Source, option: str, default: str) -> Path:
    if source.opt(option):
        return source.path / source.opt(option)  # type: ignore[operator]
    return source.path / default if (source.path / default).is_dir() else source.path


def split_index(folder: Path) -> dict[int, str]:
    """``{object index: split}`` from ``<split>.txt`` or ``split_<split>.txt`` in ``folder``."""
    index: dict[int, str] = {}
    for split in ("train", "val", "test"):
        for name in (f"{split}.txt", f"split_{split}.txt"):
            path = folder / name
            if path.is_file():
                for token in path.read_text(encoding="utf-8").split():
                    index.setdefault(int(token), split)
    return index


def _referring(obj: ET.Element) -> dict[str, Any] | None:
    expression = " ".join((obj.findtext("description") or "").split())
    try:
        box = read_hbb(obj, "rad")
    except ValueError:
        return None
    if not expression or box is None or not usable_box(box):
        return None
    label = readable_class(obj.findtext("name") or "object")
    return {"expression": expression, "label": label, "xyxy_px": [px(v) for v in box.as_list()]}


def convert(source: Source, log: SkipLog) -> Iterator[Sample]:
    """Samples per (image, split): ``{"referring": [{"expression", "label", "xyxy_px"}]}``."""
    if not source.path.is_dir():
        raise ValueError(f"{source.label}: expected the DIOR-RSVG folder, got {source.path}")
    splits = split_index(_folder(source, "splits", "."))
    if not splits:
        raise ValueError(f"{source.label}: no split lists (train.txt or split_train.txt …) found")
    images = _folder(source, "images", "JPEGImages")
    counter = 0
    for xml_file in sorted(_folder(source, "annotations", "Annotations").glob("*.xml")):
        try:
            objects = list(ET.parse(xml_file).getroot().iter("object"))
        except (ET.ParseError, OSError):
            log.skip(source.label, "XML file unreadable or malformed", xml_file.name)
            continue  # its objects cannot be counted: later indices would shift, so say so loudly
        by_split: dict[str, list[dict[str, Any]]] = {}
        for obj in objects:
            split = splits.get(counter)
            counter += 1
            entry = _referring(obj)
            if entry is None or split is None:
                log.warn(
                    source.label, "object without expression/box or in no split (dropped)", xml_file.name
                )
                continue
            by_split.setdefault(split, []).append(entry)
        image = find_image(images, xml_file.stem)
        if image is None:
            log.skip(source.label, "image file missing", xml_file.name)
            continue
        for split, entries in sorted(by_split.items()):
            sample = source.make_sample(log, image, f"{xml_file.stem}/{split}", split, {"referring": entries})
            if sample is not None:
                yield sample
