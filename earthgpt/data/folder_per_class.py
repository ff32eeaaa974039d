"""Scene classification datasets laid out one folder per class: AID (``AID/<Class>/*.jpg``),
NWPU-RESISC45 (``NWPU-RESISC45/<class_name>/*.jpg``), UC Merced (``Images/<classname>/*.tif``),
EuroSAT (``2750/<Class>/*.jpg``).

``PATH`` is the dataset folder; while it holds exactly one sub-folder and no images, the converter
steps into it (``aid/`` → ``aid/AID/``), so the distributed archive works as unpacked. Each image
gives ``annotations["class"]`` (the folder name made readable). None of these datasets ships a
split, so the hash split of the relative path applies (80/20 unless ``holdout`` says otherwise).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from earthgpt.data.records import IMAGE_EXTENSIONS, Sample, SkipLog, readable_class
from earthgpt.data.sources import Source

OPTIONS: dict[str, str] = {
    "extensions": "comma-separated image extensions to take (default .jpg,.jpeg,.png,.tif,.tiff,.bmp)",
}


def _class_root(folder: Path) -> Path:
    """Step into single sub-folders until the folder holds the class folders."""
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
        dirs = [p for p in entries if p.is_dir()]
        if len(dirs) == 1 and not any(p.is_file() for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS):
            folder = dirs[0]
            continue
        return folder


def convert(source: Source, log: SkipLog) -> Iterator[Sample]:
    """One sample per image file: ``{"class": readable class name}``."""
    if not source.path.is_dir():
        raise ValueError(f"{source.label}: expected a folder of class folders, got {source.path}")
    extensions = tuple(
        e.strip().lower() if e.strip().startswith(".") else f".{e.strip().lower()}"
        for e in (source.opt("extensions") or ",".join(IMAGE_EXTENSIONS)).split(",")
        if e.strip()
    )
    classes_dir = _class_root(source.path)
    for class_dir in sorted(p for p in classes_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = readable_class(class_dir.name)
        for image in sorted(class_dir.iterdir()):
            if not image.is_file() or image.suffix.lower() not in extensions:
                continue
            key = f"{class_dir.name}/{image.stem}"
            sample = source.make_sample(log, image, key, None, {"class": label})
            if sample is not None:
                yield sample
