"""Pascal VOC XML, horizontal (``voc-hbb``: ``bndbox``) or rotated (``voc-obb``) boxes: HIT-UAV
``normal_xml``/``rotate_xml``, SSDD ``VOC``/``VOCOBB``, DIOR, DIOR-R.

Rotated boxes come in three shapes, all read:

- ``robndbox`` ``cx cy w h angle`` (roLabelImg, HIT-UAV): the angle is in **radians** (HIT-UAV's
  lie in [0, π)); the corners are roLabelImg's, the box turned clockwise on screen by the angle,
  i.e. :func:`~earthgpt.geometry.obb_from_cxcywha` with the angle in degrees (option
  ``angle_unit=deg`` for files written in degrees);
- ``robndbox`` ``x_left_top y_left_top … x_left_bottom y_left_bottom`` (DIOR-R);
- ``rotated_bndbox`` ``x1 y1 … x4 y4`` (SSDD ``VOCOBB``; its ``rotated_bbox_theta`` is not used
  because the corners are given).

``PATH`` is the dataset folder. ``annotations`` (default ``Annotations``) names the XML folder and
may hold a ``*`` (SSDD: ``VOCOBB/Annotations*``); ``images`` (default ``JPEGImages``) names the
image folder, a ``*`` in it standing for what the annotations' ``*`` matched. The split comes from
the ``train.txt``/``val.txt``/``test.txt`` id lists in ``splits`` (default ``ImageSets/Main`` next to
the XML folder; an image in no list is a counted skip), else from ``dir_splits`` (``01:train,02:test``
maps what ``*`` matched to a split), else the hash split. Classes in ``exclude`` (HIT-UAV:
``DontCare``, regions its annotators could not label) are left out.
"""

from __future__ import annotations

import fnmatch
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from earthgpt.data.records import (
    IMAGE_EXTENSIONS,
    Sample,
    SkipLog,
    find_image,
    hbb_entry,
    obb_entry,
    readable_class,
    usable_box,
)
from earthgpt.data.sources import Source
from earthgpt.geometry import HBB, OBB, obb_from_corners, obb_from_cxcywha

OPTIONS: dict[str, str] = {
    "annotations": "XML folder relative to PATH, may hold one * (default Annotations)",
    "images": "image folder relative to PATH; * stands for the annotations' * (default JPEGImages)",
    "splits": "folder of train.txt / val.txt / test.txt id lists (default ImageSets/Main by the XML folder)",
    "dir_splits": "what the annotations' * matched → split, e.g. 01:train,02:test",
    "exclude": "comma-separated source class names to leave out (default: HIT-UAV DontCare)",
    "angle_unit": "unit of robndbox angles: rad (default) or deg",
}
_DIOR_R = (
    "x_left_top",
    "y_left_top",
    "x_right_top",
    "y_right_top",
    "x_right_bottom",
    "y_right_bottom",
    "x_left_bottom",
    "y_left_bottom",
)
_SSDD = ("x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4")


def _numbers(node: ET.Element, names: tuple[str, ...]) -> list[float] | None:
    values = [node.findtext(name) for name in names]
    if any(v is None for v in values):
        return None
    return [float(v) for v in values]  # type: ignore[arg-type]


def read_hbb(obj: ET.Element, angle_unit: str) -> HBB | None:
    """The ``bndbox`` of a VOC object (xyxy pixels), or None when it has none."""
    node = obj.find("bndbox")
    values = None if node is None else _numbers(node, ("xmin", "ymin", "xmax", "ymax"))
    return None if values is None else HBB(*values)


def read_obb(obj: ET.Element, angle_unit: str) -> OBB | None:
    """The rotated box of a VOC object in any of the three shapes (module doc), or None."""
    node = obj.find("robndbox")
    if node is not None:
        corners = _numbers(node, _DIOR_R)
        if corners is not None:
            return obb_from_corners(zip(corners[0::2], corners[1::2], strict=True))
        values = _numbers(node, ("cx", "cy", "w", "h", "angle"))
        if values is not None:
            cx, cy, w, h, angle = values
            return obb_from_cxcywha(cx, cy, w, h, math.degrees(angle) if angle_unit == "rad" else angle)
    node = obj.find("rotated_bndbox")
    corners = None if node is None else _numbers(node, _SSDD)
    if corners is not None:
        return obb_from_corners(zip(corners[0::2], corners[1::2], strict=True))
    return None


def _objects(
    source: Source,
    log: SkipLog,
    root: ET.Element,
    name: str,
    reader: Callable[[ET.Element, str], HBB | OBB | None],
) -> list[dict[str, Any]]:
    angle_unit = source.opt("angle_unit") or "rad"
    if angle_unit not in ("rad", "deg"):
        raise ValueError(f"{source.label}: angle_unit must be rad or deg, got {angle_unit!r}")
    entries = []
    for obj in root.iter("object"):
        cls = (obj.findtext("name") or "").strip()
        if cls in source.excluded_classes:
            continue
        try:
            box = reader(obj, angle_unit)
        except ValueError:
            box = None
        if not cls or box is None or not usable_box(box):
            log.warn(source.label, "object without a class or a usable box (dropped)", name)
            continue
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        make = hbb_entry if isinstance(box, HBB) else obb_entry
        entries.append(make(readable_class(cls), box, difficult))  # type: ignore[arg-type]
    return entries


def _split_lists(folder: Path) -> dict[str, str] | None:
    """``{image id: split}`` from ``train.txt``/``val.txt``/``test.txt`` in ``folder``, or None."""
    found: dict[str, str] = {}
    for split in ("train", "val", "test"):
        path = folder / f"{split}.txt"
        if path.is_file():
            for line in path.read_text(encoding="utf-8").split():
                found.setdefault(line.strip(), split)
    return found or None


def _folders(source: Source) -> list[tuple[Path, str]]:
    """``[(XML folder, what its * matched)]`` sorted."""
    pattern = source.opt("annotations") or "Annotations"
    if "*" not in pattern:
        folder = source.path / pattern
        if not folder.is_dir():
            raise ValueError(f"{source.label}: annotation folder {pattern!r} not found in {source.path}")
        return [(folder, "")]
    folders = sorted(p for p in source.path.glob(pattern) if p.is_dir())
    if not folders:
        raise ValueError(f"{source.label}: no annotation folder matches {pattern!r} in {source.path}")
    head, tail = pattern.rsplit("/", 1)[-1].split("*", 1)
    return [
        (f, f.name[len(head) : len(f.name) - len(tail)])
        for f in folders
        if fnmatch.fnmatch(f.name, f"{head}*{tail}")
    ]


def _dir_splits(source: Source) -> dict[str, str]:
    pairs = [p.split(":", 1) for p in (source.opt("dir_splits") or "").split(",") if p.strip()]
    if any(len(p) != 2 for p in pairs):
        raise ValueError(
            f"{source.label}: dir_splits expects MATCH:SPLIT pairs, got {source.opt('dir_splits')!r}"
        )
    return {m.strip(): s.strip() for m, s in pairs}


def _image_path(images: Path, filename: str, stem: str) -> Path | None:
    if filename and Path(filename).suffix.lower() in IMAGE_EXTENSIONS and (images / filename).is_file():
        return images / filename
    return find_image(images, stem)


def _convert(
    source: Source, log: SkipLog, key: str, reader: Callable[[ET.Element, str], HBB | OBB | None]
) -> Iterator[Sample]:
    dir_splits = _dir_splits(source)
    for folder, match in _folders(source):
        images = source.path / (source.opt("images") or "JPEGImages").replace("*", match)
        lists = (
            _split_lists(source.path / source.opt("splits"))
            if source.opt("splits")
            else (_split_lists(folder.parent / "ImageSets" / "Main"))
        )
        for xml_file in sorted(folder.glob("*.xml")):
            name = f"{folder.name}/{xml_file.name}"
            try:
                root = ET.parse(xml_file).getroot()
            except (ET.ParseError, OSError):
                log.skip(source.label, "XML file unreadable or malformed", name)
                continue
            split = dir_splits.get(match)
            if lists is not None:
                split = lists.get(xml_file.stem)
                if split is None:
                    log.skip(source.label, "image in no split list", name)
                    continue
            image = _image_path(images, (root.findtext("filename") or "").strip(), xml_file.stem)
            if image is None:
                log.skip(source.label, "image file missing", name)
                continue
            sample = source.make_sample(
                log, image, xml_file.stem, split, {key: _objects(source, log, root, name, reader)}
            )
            if sample is None:
                continue
            size = (root.findtext("size/width"), root.findtext("size/height"))
            if size != (None, None) and size != (str(sample.width), str(sample.height)):
                log.warn(source.label, "XML size differs from the image (image size used)", name)
            yield sample


def convert_hbb(source: Source, log: SkipLog) -> Iterator[Sample]:
    """``voc-hbb``: one sample per XML file with an image: ``{"objects_hbb": [...]}``."""
    yield from _convert(source, log, "objects_hbb", read_hbb)


def convert_obb(source: Source, log: SkipLog) -> Iterator[Sample]:
    """``voc-obb``: one sample per XML file with an image: ``{"objects_obb": [...]}``."""
    yield from _convert(source, log, "objects_obb", read_obb)
