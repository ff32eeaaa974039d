"""Where a record's image file is: one search order for evaluation and training.

``record["image"]`` is a relative POSIX path and ``record["image_root"]`` names the dataset folder
it is relative to. The file is looked up, in this order:

1. under the folder mapped to its ``image_root`` (``--image-root NAME=DIR`` in ``earthgpt eval``,
   ``data.image_roots`` or the converted source's own folder in training);
2. under each data folder (the folder of the MMRS set), then under ``<data folder>/<image_root>``;
3. under the folder ``earthgpt mmrs build`` recorded for it in ``<data folder>/image_roots.json``
   (relative to the data folder), so a built set finds its images with nothing set;
4. under ``$EARTHGPT_DATA/<image_root>``.

The first existing file wins; when none exists the error names every path tried.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from earthgpt.data.mmrs_reader import DataError

IMAGE_ROOTS_FILE = "image_roots.json"
"""Written by ``earthgpt mmrs build`` beside the splits: each ``image_root`` name → the source
folder its images are under (relative to the set's folder when it can be), so that ``earthgpt eval``
and training find a built set's images with no ``EARTHGPT_DATA`` set."""


class ImageResolver:
    """Finds record images on disk (search order in the module doc); call it with a record."""

    def __init__(
        self, data_dirs: Iterable[str | Path] = (), roots: Mapping[str, str | Path] | None = None
    ) -> None:
        self.data_dirs = [Path(folder) for folder in data_dirs]
        self.roots = {name: Path(path) for name, path in (roots or {}).items()}

    def candidates(self, record: Mapping[str, Any]) -> list[Path]:
        """Every place the record's image may be, in search order."""
        image = record.get("image")
        if not isinstance(image, str) or not image:
            raise DataError(f"record {record.get('id')!r} has no 'image' path")
        root = str(record.get("image_root") or "")
        bases: list[Path] = []
        if root in self.roots:
            bases.append(self.roots[root])
        for folder in self.data_dirs:
            bases += [folder, folder / root] if root else [folder]
        for folder in self.data_dirs:
            recorded = _recorded_roots(folder) if root else {}
            if root in recorded:
                bases.append(folder / recorded[root])
        env = os.environ.get("EARTHGPT_DATA")
        if env and root:
            bases.append(Path(env) / root)
        return [base / image for base in bases]

    def __call__(self, record: Mapping[str, Any]) -> Path:
        """The first existing candidate; ``FileNotFoundError`` naming every path tried otherwise."""
        tried = self.candidates(record)
        for path in tried:
            if path.is_file():
                return path
        hint = (f"map image root {record.get('image_root')!r} to a folder (--image-root NAME=DIR, "
                "data.image_roots) or set EARTHGPT_DATA to the folder that holds it")
        where = (f"tried {', '.join(str(p) for p in tried)}; {hint}" if tried
                 else f"no folder to look in: {hint}")
        raise FileNotFoundError(f"image of record {record.get('id')!r} not found; {where}")


def _recorded_roots(folder: Path) -> dict[str, str]:
    """``folder/image_roots.json`` (written by ``earthgpt mmrs build``), or {} when there is none;
    parsed once per version of the file, not once per record."""
    path = folder / IMAGE_ROOTS_FILE
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return {}
    return _parsed_roots(str(path), stamp)


@functools.lru_cache(maxsize=32)
def _parsed_roots(path: str, stamp: int) -> dict[str, str]:
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}
