"""MMRS records as a source: ``PATH`` is a ``.jsonl`` file of records or a folder of them (every
``*.jsonl`` under it, :func:`earthgpt.data.mmrs_reader.record_files`), such as the analyst's
annotations the app exports (``Export MMRS``) or a set an earlier build wrote.

Each record becomes one sample with its id, image root and path, size, sensor, dataset, licence,
split and ``annotations`` as written; the builder then writes its turns again from the
annotations (native and template turns), so records of several sets merge by id like any other
source. Images are not looked up here: the record's ``image_root`` names the folder they are
relative to, mapped at training or evaluation time as for any MMRS set. The common options
``split``, ``sensor``, ``dataset`` and ``licence`` override the records' values. A record without
``id``, ``image``, ``width``, ``height`` or ``annotations``, with a size that is not a whole
positive number of pixels, an unknown sensor, or annotations that do not fit their schema
(:mod:`earthgpt.data.annotation_schema`: a box of 3 numbers, text where a list belongs) is a
counted skip; the card's example names its file, line and field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from earthgpt.data.annotation_schema import AnnotationError, check_annotations
from earthgpt.data.mmrs_reader import read_jsonl, record_files
from earthgpt.data.records import Sample, SkipLog
from earthgpt.data.sources import Source, dataset_key
from earthgpt.raster.files import MAX_SIDE
from earthgpt.sensors import Sensor

OPTIONS: dict[str, str] = {}
REQUIRED = ("id", "image", "width", "height", "annotations")


class RecordError(ValueError):
    """Why a record is skipped: ``reason`` is the card's (counted) reason, the message adds the field."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def _pixels(record: dict[str, Any], key: str) -> int:
    """``width`` or ``height``: a whole number of pixels, 1 to the rasters' ``MAX_SIDE``."""
    value = record[key]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIDE:
        raise RecordError("record with a bad width or height", f"{key} {json.dumps(value)[:40]}")
    return value


def _text(record: dict[str, Any], key: str) -> str:
    """``id`` (text or a whole number) or ``image`` (text), not empty."""
    value = record[key]
    if key == "id" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise RecordError("record with a bad id or image", f"{key} {json.dumps(value)[:40]}")
    return value


def _sample(record: dict[str, Any], source: Source) -> Sample:
    """One record as a sample; :class:`RecordError` for a record that does not fit."""
    missing = [key for key in REQUIRED if key not in record]
    if missing:
        raise RecordError(f"record without {', '.join(missing)}")
    try:
        check_annotations(record["annotations"])
    except AnnotationError as err:
        raise RecordError(f"record with malformed annotations ({err.key})", f"annotations.{err}") from None
    options = source.options
    sensor = str(options.get("sensor") or record.get("sensor") or Sensor.optical).lower()
    if sensor not in list(Sensor):
        raise RecordError("record with an unknown sensor", json.dumps(record.get("sensor"))[:40])
    return Sample(
        id=_text(record, "id"),
        image_root=str(record.get("image_root") or ""),
        image=_text(record, "image"),
        width=_pixels(record, "width"),
        height=_pixels(record, "height"),
        sensor=Sensor(sensor),
        dataset=dataset_key(options.get("dataset") or str(record.get("dataset") or source.dataset)),
        licence=options.get("licence") or str(record.get("licence") or "unknown"),
        split=options.get("split") or str(record.get("split") or "train"),
        annotations=dict(record["annotations"]),
    )


def convert(source: Source, log: SkipLog) -> Iterator[Sample]:
    """One sample per record of every record file of ``source.path``; a record that does not fit
    is a counted skip whose example names its file, line and field."""
    for path in record_files(source.path):
        for number, record in enumerate(read_jsonl(path, "an MMRS record"), start=1):
            where = f"{path.name}:{number}"
            try:
                sample = _sample(record, source)
            except RecordError as err:
                log.skip(source.label, err.reason, f"{where} {err.detail}".strip())
                continue
            yield sample
