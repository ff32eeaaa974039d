"""MMRS records as a source: ``PATH`` is a ``.jsonl`` file of records or a folder of them (every
``*.jsonl`` under it, :func:`earthgpt.data.mmrs_reader.record_files`), such as the analyst's
annotations the app exports (``Export MMRS``) or a set an earlier build wrote.

Each record becomes one sample with its id, image root and path, size, sensor, dataset, licence,
split and ``annotations`` as written; the builder then writes its turns again from the
annotations (native and template turns), so records of several sets merge by id like any other
source. Images are not looked up here: the record's ``image_root`` names the folder they are
relative to, mapped at training or evaluation time as for any MMRS set. The common options
``split``, ``sensor``, ``dataset`` and ``licence`` override the records' values. A record without
``id``, ``image``, ``width``, ``height`` or ``annotations``, or with an unknown sensor, is a
counted skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from earthgpt.data.mmrs_reader import read_jsonl, record_files
from earthgpt.data.records import Sample, SkipLog
from earthgpt.data.sources import Source, dataset_key
from earthgpt.sensors import Sensor

OPTIONS: dict[str, str] = {}
REQUIRED = ("id", "image", "width", "height", "annotations")


def _sample(record: dict[str, Any], source: Source) -> Sample:
    """One record as a sample; KeyError / ValueError / TypeError for a record that does not fit."""
    missing = [key for key in REQUIRED if key not in record]
    if missing:
        raise KeyError(", ".join(missing))
    if not isinstance(record["annotations"], dict):
        raise TypeError("annotations is not an object")
    width, height = int(record["width"]), int(record["height"])
    if width < 1 or height < 1:
        raise ValueError(f"size {width}×{height}")
    options = source.options
    return Sample(
        id=str(record["id"]),
        image_root=str(record.get("image_root") or ""),
        image=str(record["image"]),
        width=width,
        height=height,
        sensor=Sensor(str(options.get("sensor") or record.get("sensor") or Sensor.optical).lower()),
        dataset=dataset_key(options.get("dataset") or str(record.get("dataset") or source.dataset)),
        licence=options.get("licence") or str(record.get("licence") or "unknown"),
        split=options.get("split") or str(record.get("split") or "train"),
        annotations=dict(record["annotations"]),
    )


def convert(source: Source, log: SkipLog) -> Iterator[Sample]:
    """One sample per record of every record file of ``source.path``."""
    for path in record_files(source.path):
        for number, record in enumerate(read_jsonl(path, "an MMRS record"), start=1):
            where = f"{path.name}:{number}"
            try:
                sample = _sample(record, source)
            except KeyError as err:
                log.skip(source.label, f"record without {err.args[0]}", where)
                continue
            except (TypeError, ValueError):
                log.skip(source.label, "record with a bad size, sensor or annotations", where)
                continue
            yield sample
