"""Build the MMRS unified instruction set: run the converters, merge samples of the same image,
write their turns, and store ``<split>.jsonl`` files with a dataset card.

Samples from different sources with the same id (``dataset/image key``) are one image: HIT-UAV's
``normal_xml`` and ``rotate_xml``, or SSDD's ``coco`` and ``VOCOBB``, give one record with both box
kinds. The first source's image path is kept; a later sample whose size, split or sensor disagrees
is a counted skip, and an annotation key already present keeps the first source's value (counted
warning). Output is deterministic: records sorted by id, no timestamps, no absolute paths.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from earthgpt.data.card import build_card, write_card
from earthgpt.data.records import SPLITS, Sample, SkipLog
from earthgpt.data.registry import check_options, get_converter
from earthgpt.data.sources import Source
from earthgpt.data.templates import generated_turns
from earthgpt.data.turns import conversation, native_turns
from earthgpt.tasks import Task

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class SourceSpec:
    """What ``--source KIND=PATH`` plus its ``--option`` s asked for."""

    kind: str
    path: Path
    options: tuple[tuple[str, str], ...] = ()

    def to_source(self) -> Source:
        converter = get_converter(self.kind)
        if not self.path.exists():
            raise ValueError(f"{self.kind}: source path does not exist: {self.path}")
        source = Source(converter.kind, self.path, dict(self.options))
        check_options(source)
        return source


def _merge(existing: Sample, new: Sample, log: SkipLog, label: str) -> None:
    """Fold ``new`` (same id) into ``existing`` following the module doc's rules."""
    for field in ("width", "height", "split", "sensor"):
        if getattr(existing, field) != getattr(new, field):
            log.skip(label, f"same image as an earlier source but another {field}", new.id)
            return
    for key, value in new.annotations.items():
        if key in existing.annotations:
            log.warn(label, f"annotation '{key}' already given by an earlier source (kept the first)", new.id)
        else:
            existing.annotations[key] = value


def collect(sources: Sequence[Source], log: SkipLog, progress: bool = True) -> dict[str, Sample]:
    """Every sample of every source, merged by id."""
    samples: dict[str, Sample] = {}
    for source in sources:
        converter = get_converter(source.kind)
        items = converter.convert(source, log)
        for sample in tqdm(items, desc=source.label, unit=" images", disable=not progress, leave=False):
            if sample.id in samples:
                _merge(samples[sample.id], sample, log, source.label)
            else:
                samples[sample.id] = sample
    return samples


def vocabularies(samples: Iterable[Sample]) -> dict[str, list[str]]:
    """Object classes seen per dataset (for presence questions about absent classes)."""
    found: dict[str, set[str]] = {}
    for sample in samples:
        names = found.setdefault(sample.dataset, set())
        for key in ("objects_hbb", "objects_obb"):
            names.update(obj["label"] for obj in sample.annotations.get(key, []))
    return {dataset: sorted(names) for dataset, names in found.items()}


def to_record(sample: Sample, vocabulary: Sequence[str], templates: bool = True) -> dict[str, Any] | None:
    """The JSON record of a sample (schema in ``docs/MMRS.md``), or None when it has no turns.
    ``templates=False`` leaves out the template turns (only the sample's own labels are stated)."""
    turns = [*native_turns(sample), *(generated_turns(sample, vocabulary) if templates else ())]
    if not turns:
        return None
    order = list(Task)
    tasks = sorted({t.task for t in turns}, key=order.index)
    return {
        "id": sample.id,
        "image_root": sample.image_root,
        "image": sample.image,
        "width": sample.width,
        "height": sample.height,
        "sensor": sample.sensor.value,
        "dataset": sample.dataset,
        "licence": sample.licence,
        "split": sample.split,
        "tasks": [t.value for t in tasks],
        "annotations": {k: sample.annotations[k] for k in sorted(sample.annotations)},
        "conversations": conversation(turns),
    }


def make_records(samples: dict[str, Sample], log: SkipLog) -> list[dict[str, Any]]:
    """Records of all samples, sorted by id; samples without any turn are counted skips."""
    vocab = vocabularies(samples.values())
    records = []
    for sample_id in sorted(samples):
        record = to_record(samples[sample_id], vocab.get(samples[sample_id].dataset, []))
        if record is None:
            log.skip(samples[sample_id].dataset, "no labels to make a turn from", sample_id)
        else:
            records.append(record)
    return records


def write_jsonl(records: Iterable[dict[str, Any]], path: Path) -> int:
    """Write one JSON object per line (UTF-8, ``\\n`` endings); returns the number written."""
    count = 0
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def _clear_previous(out_dir: Path) -> None:
    """Remove the split files an earlier build listed in ``card.json`` (and nothing else)."""
    card = out_dir / "card.json"
    if not card.is_file():
        return
    try:
        previous = json.loads(card.read_text(encoding="utf-8")).get("files", [])
    except (OSError, json.JSONDecodeError):
        return
    for name in previous:
        if isinstance(name, str) and name.endswith(".jsonl") and "/" not in name:
            (out_dir / name).unlink(missing_ok=True)


def build(specs: Sequence[SourceSpec], out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Convert ``specs`` into ``out_dir`` (``<split>.jsonl``, ``card.json``, ``card.md``); returns
    the card. ``train.jsonl`` and ``val.jsonl`` are always written, other splits when present."""
    if not specs:
        raise ValueError("no sources given: pass --source KIND=PATH (or --all-shared DATA_DIR)")
    sources = [spec.to_source() for spec in specs]
    log = SkipLog()
    records = make_records(collect(sources, log, progress), log)
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_previous(out_dir)
    splits = sorted(
        {r["split"] for r in records} | {"train", "val"},
        key=lambda s: (SPLITS.index(s) if s in SPLITS else len(SPLITS), s),
    )
    files = []
    for split in splits:
        write_jsonl((r for r in records if r["split"] == split), out_dir / f"{split}.jsonl")
        files.append(f"{split}.jsonl")
    card = build_card(records, sources, log, files, SCHEMA_VERSION)
    write_card(card, out_dir)
    write_image_roots(sources, out_dir)
    return card


def write_image_roots(sources: Sequence[Any], out_dir: Path) -> None:
    """``out_dir/image_roots.json`` for ``sources`` (see
    :data:`earthgpt.data.image_resolver.IMAGE_ROOTS_FILE`), read by its ``ImageResolver``."""
    import os

    from earthgpt.data.image_resolver import IMAGE_ROOTS_FILE

    roots = {}
    for source in sources:
        folder = Path(source.root_dir).resolve()
        try:
            roots[source.root_name] = os.path.relpath(folder, out_dir.resolve())
        except ValueError:  # another drive (Windows)
            roots[source.root_name] = str(folder)
    text = json.dumps(roots, indent=2, sort_keys=True) + "\n"
    (out_dir / IMAGE_ROOTS_FILE).write_text(text, encoding="utf-8")
