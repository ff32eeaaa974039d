"""Reading an MMRS set without torch: records, their image files, and their turns as pairs.

The torch ``Dataset`` and collate live with the training code (built on
:mod:`earthgpt.processor`); evaluation and tools use these plain iterators.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_PLACEHOLDER = "<image>"


def read_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a ``.jsonl`` file, or of every ``*.jsonl`` in a folder (sorted by name).

    Blank lines are ignored; a line that is not a JSON object raises ``ValueError`` naming the
    file and line.
    """
    path = Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"no .jsonl files in {path}")
    for file in files:
        with file.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{file}:{number}: not valid JSON ({err.msg})") from None
                if not isinstance(record, dict):
                    raise ValueError(f"{file}:{number}: expected a JSON object, got {type(record).__name__}")
                yield record


def resolve_image(record: Mapping[str, Any], roots: Mapping[str, str | Path] | None = None) -> Path:
    """The image file of a record: ``roots[image_root] / image``; without a mapping for its root,
    ``$EARTHGPT_DATA/<image_root>/<image>`` (raises ``ValueError`` when neither is set)."""
    root_name = record["image_root"]
    if roots and root_name in roots:
        return Path(roots[root_name]) / record["image"]
    data = os.environ.get("EARTHGPT_DATA")
    if not data:
        raise ValueError(f"no folder for image root {root_name!r}: pass roots= or set EARTHGPT_DATA")
    return Path(data) / root_name / record["image"]


@dataclass(frozen=True)
class TurnPair:
    """One instruction and its answer from a record, with the turn's metadata."""

    record_id: str
    index: int
    task: str
    question: str
    answer: str
    generated: bool
    question_type: str | None = None


def iter_turn_pairs(record: Mapping[str, Any], *, strip_image: bool = True) -> Iterator[TurnPair]:
    """The human/assistant pairs of a record in order; ``strip_image`` removes the leading
    ``"<image>\\n"`` of the first question. Raises ``ValueError`` when turns do not alternate."""
    messages = record["conversations"]
    if len(messages) % 2:
        raise ValueError(f"record {record.get('id')!r}: odd number of messages ({len(messages)})")
    for index in range(0, len(messages), 2):
        human, answer = messages[index], messages[index + 1]
        if human.get("from") != "human" or answer.get("from") != "assistant":
            raise ValueError(f"record {record.get('id')!r}: message {index} is not a human/assistant pair")
        question = human["value"]
        if strip_image and question.startswith(IMAGE_PLACEHOLDER):
            question = question[len(IMAGE_PLACEHOLDER) :].lstrip("\n")
        yield TurnPair(
            str(record.get("id")),
            index // 2,
            human["task"],
            question,
            answer["value"],
            bool(human.get("generated", False)),
            human.get("question_type"),
        )


def iter_dataset_pairs(
    path: str | Path, task: str | None = None, split: str | None = None, include_generated: bool = True
) -> Iterator[tuple[dict[str, Any], TurnPair]]:
    """``(record, pair)`` over a set, optionally only one task / split / non-generated turns."""
    for record in read_records(path):
        if split is not None and record.get("split") != split:
            continue
        for pair in iter_turn_pairs(record):
            if (task is None or pair.task == task) and (include_generated or not pair.generated):
                yield record, pair
