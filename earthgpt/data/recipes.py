"""Recipes: a list of sources built together. :data:`SHARED_RECIPE` builds every labelled dataset
of the project's data folder (``$EARTHGPT_DATA``, ``../shared/data``) into one MMRS set; a YAML
file with the same shape serves any other collection::

    sources:
      - kind: voc-hbb
        path: hit_uav            # relative to the data folder (or absolute)
        options: {annotations: normal_xml/Annotations, images: JPEGImages}

What the shared recipe does per folder, and why:

- ``aid``: folder per class, hash split.
- ``rsicd``: Karpathy json with its own split; captions de-duplicated.
- ``rsvqa_lr``, ``rsvqa_hr``: the sample's split files; the sample names no split, so hash split.
- ``dota``: labelTxt; only 2 of the 7 label files have their image (5 counted skips).
- ``hit_uav``: ``normal_xml`` (HBB) and ``rotate_xml`` (OBB) on the same ``JPEGImages``, merged
  into one record per image; split from ``ImageSets/Main`` lists; ``DontCare`` left out.
- ``ssdd``: ``coco`` (HBB, split from ``train.json``/``test.json``) and ``VOCOBB`` (OBB) merged per
  image; ``VOCOBB``'s ``Annotations01``/``02`` hold exactly the images of COCO ``train``/``test``, so
  ``dir_splits=01:train,02:test``. ``VOC`` (the same HBBs rounded) and ``VOCSEG`` are not read.
- ``dior_rsvg``: the grounding XML with its official split lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from earthgpt.data.builder import SourceSpec

SHARED_RECIPE: list[dict[str, Any]] = [
    {"kind": "folder-per-class", "path": "aid"},
    {"kind": "karpathy-json", "path": "rsicd/dataset_rsicd.json", "options": {"images": "RSICD_images"}},
    {"kind": "rsvqa", "path": "rsvqa_lr", "options": {"images": "Images", "ext": ".png"}},
    {"kind": "rsvqa", "path": "rsvqa_hr", "options": {"images": "Images", "ext": ".png"}},
    {"kind": "dota", "path": "dota"},
    {
        "kind": "voc-hbb",
        "path": "hit_uav",
        "options": {"annotations": "normal_xml/Annotations", "images": "JPEGImages"},
    },
    {
        "kind": "voc-obb",
        "path": "hit_uav",
        "options": {"annotations": "rotate_xml/Annotations", "images": "JPEGImages"},
    },
    {
        "kind": "coco",
        "path": "ssdd",
        "options": {"annotations": "coco/annotations/*.json", "images": "coco/images"},
    },
    {
        "kind": "voc-obb",
        "path": "ssdd",
        "options": {
            "annotations": "VOCOBB/Annotations*",
            "images": "VOCOBB/JPEGImages*",
            "dir_splits": "01:train,02:test",
        },
    },
    {"kind": "dior-rsvg", "path": "dior_rsvg"},
]


def specs_from_recipe(recipe: list[dict[str, Any]], data_dir: Path) -> list[SourceSpec]:
    """Source specs of a recipe, relative paths taken under ``data_dir``."""
    specs = []
    for index, entry in enumerate(recipe):
        if not isinstance(entry, dict) or "kind" not in entry or "path" not in entry:
            raise ValueError(
                f"recipe entry {index}: expected a mapping with 'kind' and 'path', got {entry!r}"
            )
        options = entry.get("options") or {}
        if not isinstance(options, dict):
            raise ValueError(f"recipe entry {index}: 'options' must be a mapping, got {options!r}")
        path = Path(str(entry["path"]))
        specs.append(
            SourceSpec(
                str(entry["kind"]),
                path if path.is_absolute() else data_dir / path,
                tuple(sorted((str(k), str(v)) for k, v in options.items())),
            )
        )
    return specs


def load_recipe(path: Path) -> list[dict[str, Any]]:
    """The ``sources`` list of a YAML recipe file."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("sources"), list):
        raise ValueError(f"{path}: expected a mapping with a 'sources' list")
    return data["sources"]
