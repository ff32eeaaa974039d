"""The records a run trains on, from MMRS files or any caption/instruction set the MMRS builder reads.

``data.sources`` entries are ``KIND=PATH`` with optional ``;option=value`` parts:

- ``mmrs=FILE.jsonl`` or ``mmrs=FOLDER`` (``<split>.jsonl`` in it, else every ``*.jsonl``): MMRS
  records as written by ``earthgpt mmrs build``, read as ``earthgpt eval`` reads them
  (:func:`earthgpt.data.mmrs_reader.read_records`);
- any kind of ``earthgpt mmrs build`` (``karpathy-json``, ``coco-captions``, ``llava``,
  ``folder-per-class``, …; see :mod:`earthgpt.data.registry`), converted in memory by the same
  converters and turn writers as the builder, e.g. ``karpathy-json=data/rsicd;images=RSICD_images``
  or ``llava=data/blip_laion.json;task=caption``. Their image roots are known from the source.

Records are then kept by ``data.split`` (None keeps all). Their images are found by
:class:`earthgpt.data.image_resolver.ImageResolver`, with the search order of ``earthgpt eval``: a
folder of ``data.image_roots`` (or of the converted source), each MMRS source's folder, then
``$EARTHGPT_DATA``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from earthgpt.data.image_resolver import ImageResolver
from earthgpt.data.mmrs_reader import read_records, records_folder

MMRS = "mmrs"


def parse_source(text: str) -> tuple[str, Path, dict[str, str]]:
    """``"KIND=PATH;opt=value;…"`` → ``(kind, path, options)``."""
    head, *extras = text.split(";")
    kind, sep, path = head.partition("=")
    if not sep or not kind.strip() or not path.strip():
        raise ValueError(f"data source {text!r}: expected KIND=PATH[;option=value…]")
    options = {}
    for extra in extras:
        key, sep, value = extra.partition("=")
        if not sep:
            raise ValueError(f"data source {text!r}: option {extra!r} is not option=value")
        options[key.strip()] = value.strip()
    return kind.strip(), Path(path.strip()), options


def _converted(kind: str, path: Path, options: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    from earthgpt.data.builder import SourceSpec, collect, make_records
    from earthgpt.data.records import SkipLog

    source = SourceSpec(kind, path, tuple(sorted(options.items()))).to_source()
    log = SkipLog()
    records = make_records(collect([source], log, progress=False), log)
    return records, {source.root_name: str(source.root_dir)}


def load_records(
    sources: list[str], split: str | None, image_roots: Mapping[str, str]
) -> tuple[list[dict[str, Any]], ImageResolver]:
    """All records of ``sources`` in ``split`` and the resolver of their images (a folder of
    ``image_roots`` wins over a converted source's own)."""
    records: list[dict[str, Any]] = []
    roots: dict[str, str] = {}
    folders: list[Path] = []
    for text in sources:
        kind, path, options = parse_source(text)
        if not path.exists():
            raise FileNotFoundError(f"data source {text!r}: {path} does not exist")
        if kind == MMRS:
            if options:
                raise ValueError(f"data source {text!r}: mmrs takes no options")
            records += read_records(path, split)
            folders.append(records_folder(path))
        else:
            found, source_roots = _converted(kind, path, options)
            roots.update(source_roots)
            records += [r for r in found if split is None or r.get("split") == split]
    roots.update(image_roots)
    if not records:
        raise ValueError(f"no records in split {split!r} from {sources}")
    return records, ImageResolver(folders, roots)
