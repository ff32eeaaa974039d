"""What a converter yields (:class:`Sample`), the skip log, and the small helpers every converter
shares: readable class names, the hash split, image sizes, relative image paths.

A converter reads one source layout and yields one :class:`Sample` per image with its structured
labels (``annotations``, schema in ``docs/MMRS.md``); it never writes conversation text. The
builder merges samples of the same image, turns the annotations into turns
(:mod:`earthgpt.data.turns`, :mod:`earthgpt.data.templates`) and writes the records.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from earthgpt.geometry import HBB, OBB
from earthgpt.sensors import Sensor

SPLITS = ("train", "val", "test")
"""The usual split names; a source may add its own (RSVQA-HR ``test_phili``)."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


@dataclass
class Sample:
    """One image and its labels, before turns are written.

    ``image`` is a POSIX path relative to the directory named ``image_root`` (never absolute);
    ``annotations`` holds the structured labels with pixel boxes (see ``docs/MMRS.md``).
    """

    id: str
    image_root: str
    image: str
    width: int
    height: int
    sensor: Sensor
    dataset: str
    licence: str
    split: str
    annotations: dict[str, Any] = field(default_factory=dict)


class SkipLog:
    """Counts what a build skipped or changed, by source and reason, with a few examples each.

    ``skip`` is for a record (image) left out; ``warn`` for something dropped or adjusted inside a
    record (an object with a degenerate box, a size that disagrees with the image file).
    Examples are relative paths or ids, so the card stays portable.
    """

    MAX_EXAMPLES = 5

    def __init__(self) -> None:
        self.skipped: Counter[tuple[str, str]] = Counter()
        self.warnings: Counter[tuple[str, str]] = Counter()
        self.examples: dict[tuple[str, str, str], list[str]] = {}

    def skip(self, source: str, reason: str, item: str) -> None:
        """Record that ``item`` of ``source`` was left out because of ``reason``."""
        self._count("skipped", self.skipped, source, reason, item)

    def warn(self, source: str, reason: str, item: str) -> None:
        """Record a non-fatal problem in ``item`` of ``source``."""
        self._count("warning", self.warnings, source, reason, item)

    def _count(self, kind: str, counter: Counter, source: str, reason: str, item: str) -> None:
        counter[(source, reason)] += 1
        examples = self.examples.setdefault((kind, source, reason), [])
        if len(examples) < self.MAX_EXAMPLES:
            examples.append(item)

    def as_rows(self, kind: str) -> list[dict[str, Any]]:
        """``[{"source", "reason", "count", "examples"}]`` sorted, for the card (kind: skipped|warning)."""
        counter = self.skipped if kind == "skipped" else self.warnings
        return [
            {"source": s, "reason": r, "count": n, "examples": sorted(self.examples.get((kind, s, r), []))}
            for (s, r), n in sorted(counter.items())
        ]

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())


# --- class names -----------------------------------------------------------------------------------

# Source class names written as one lower-case word (UC Merced, DIOR) and their readable form.
_JOINED_NAMES = {
    "baseballdiamond": "baseball diamond",
    "baseballfield": "baseball field",
    "basketballcourt": "basketball court",
    "denseresidential": "dense residential",
    "expressway-service-area": "expressway service area",
    "expressway-toll-station": "expressway toll station",
    "golfcourse": "golf course",
    "golffield": "golf field",
    "groundtrackfield": "ground track field",
    "mediumresidential": "medium residential",
    "mobilehomepark": "mobile home park",
    "parkinglot": "parking lot",
    "sparseresidential": "sparse residential",
    "storagetank": "storage tank",
    "storagetanks": "storage tanks",
    "tenniscourt": "tennis court",
    "trainstation": "train station",
}


def readable_class(name: str) -> str:
    """A source class name as plain words: ``"BaseballField"`` → ``"baseball field"``,
    ``"baseball_diamond"`` → ``"baseball diamond"``, ``"small-vehicle"`` → ``"small vehicle"``,
    ``"golffield"`` → ``"golf field"``."""
    text = name.strip()
    joined = _JOINED_NAMES.get(text.lower())
    if joined:
        return joined
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", text)
    text = re.sub(r"[_\-\s]+", " ", text)
    return text.strip().lower()


# --- splits ----------------------------------------------------------------------------------------


def hash_split(key: str, holdout: float = 0.2, holdout_name: str = "val") -> str:
    """A deterministic split for sources without an official one: ``holdout_name`` when the first
    8 hex digits of ``sha1(key)`` fall in the last ``holdout`` fraction, else ``"train"``.

    ``key`` is the image path relative to its root, so the split does not depend on where the data
    lives, on the order files are listed, or on which other images are present.
    """
    if not 0.0 <= holdout <= 1.0:
        raise ValueError(f"holdout must be a fraction in [0, 1], got {holdout}")
    value = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16) / 0x1_0000_0000
    return holdout_name if value >= 1.0 - holdout else "train"


def split_from_name(name: str) -> str | None:
    """The split a file or folder name declares (``train``, ``val``, ``test``, ``test_phili``), or
    None. ``"instances_train2017"`` → ``train``; ``"LR_split_val_images"`` → ``val``; ``"validation"``
    → ``val``; ``"trainval"`` → ``train``."""
    low = name.lower()
    for word, split in (
        ("test_phili", "test_phili"),
        ("trainval", "train"),
        ("train", "train"),
        ("validation", "val"),
        ("val", "val"),
        ("test", "test"),
    ):
        if re.search(rf"(?<![a-z]){word}(?![a-z])", low):
            return split
    return None


# --- images and paths ------------------------------------------------------------------------------


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the image header (the pixels are not decoded), read by the one image
    reader (:func:`earthgpt.raster.inspect`), so a record is made for exactly the images chat, eval
    and training can open.

    Raises ``OSError`` when the file is missing or a raster the reader refuses (corrupt, empty,
    too large, too many bands).
    """
    from earthgpt.raster import RasterError, inspect

    try:
        info = inspect(path)
    except RasterError as err:
        raise OSError(f"not a readable image: {err}") from err
    return info.width, info.height


def relative_posix(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as a POSIX string (symbolic links are not followed, so a
    linked data folder works); raises ``ValueError`` if it lies outside ``root``."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    parts = Path(rel).parts
    if Path(rel).is_absolute() or not parts or parts[0] == "..":
        raise ValueError(f"{path} is not inside {root}")
    return PurePosixPath(*parts).as_posix()


def find_image(folder: Path, stem: str, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> Path | None:
    """The first existing ``folder/stem.ext`` over ``extensions`` (as given, then upper case)."""
    for ext in extensions:
        for candidate in (ext, ext.upper()):
            path = folder / f"{stem}{candidate}"
            if path.is_file():
                return path
    return None


def px(value: float) -> float | int:
    """A pixel coordinate for the record: integers stay integers, floats keep 2 decimals."""
    if float(value).is_integer():
        return int(value)
    return round(float(value), 2)


def hbb_entry(label: str, box: HBB, difficult: bool = False) -> dict[str, Any]:
    """An ``objects_hbb`` entry: readable label, pixel box ``xyxy_px``, difficult flag."""
    return {"label": label, "xyxy_px": [px(v) for v in box.as_list()], "difficult": bool(difficult)}


def obb_entry(label: str, box: OBB, difficult: bool = False) -> dict[str, Any]:
    """An ``objects_obb`` entry: readable label, pixel corners ``corners_px`` (x1, y1, …, x4, y4 in
    the paper's order), difficult flag."""
    return {"label": label, "corners_px": [px(v) for v in box.as_list()], "difficult": bool(difficult)}


def usable_box(box: HBB | OBB) -> bool:
    """Whether a box has a positive area (degenerate label boxes are dropped with a warning)."""
    if isinstance(box, HBB):
        return box.width > 0 and box.height > 0
    return box.area > 0


def clean_caption(text: str) -> str:
    """A caption with runs of spaces collapsed and no space before punctuation
    (``"a parking lot ."`` → ``"a parking lot."``)."""
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s+([.,;:!?])", r"\1", text)


def unique_captions(captions: Iterable[str]) -> list[str]:
    """Captions of one image without duplicates, first occurrence kept, in order.

    Two captions are duplicates when they agree ignoring case, punctuation and spacing (RSICD
    repeats captions with ``" ."`` endings and capitalisation changes); the EarthGPT paper removes
    such repeats. Empty captions are dropped.
    """
    seen: set[str] = set()
    kept: list[str] = []
    for caption in captions:
        clean = clean_caption(caption)
        key = " ".join(re.sub(r"[^\w\s]", " ", clean.lower()).split())
        if key and key not in seen:
            seen.add(key)
            kept.append(clean)
    return kept
