"""What the evaluation reads besides the records: the scorable turns, and saved predictions.

Records and their turns are read by :mod:`earthgpt.data.mmrs_reader` (the same rule as training);
a turn whose task is not one of :class:`earthgpt.tasks.Task` is not scorable and is left out.

**Predictions file** (JSON lines, one object per answered turn)::

    {"id": "<record id>", "turn": <k>, "answer": "<raw model text>", "dialect": "geochat"}

``id`` and ``turn`` name the record and its ``k``-th human turn (counting human messages only,
not list positions); ``answer`` is the model's raw text; ``dialect`` (optional) names the box
dialect of that answer (:data:`earthgpt.box_dialects.DIALECTS`) and overrides the dialect given to the
evaluation. Blank lines are ignored; a repeated ``(id, turn)`` is an error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from earthgpt.data.mmrs_reader import RecordTurn, read_jsonl, record_turns
from earthgpt.tasks import Task

TASKS = frozenset(t.value for t in Task)


class EvalError(ValueError):
    """Bad evaluation input (missing file, malformed line, predictions that do not fit the data)."""


def all_turns(records: Iterable[Mapping[str, Any]]) -> list[RecordTurn]:
    """Every scorable turn of every record, in record then turn order."""
    return [t for i, record in enumerate(records) for t in record_turns(record, i) if t.task in TASKS]


def load_predictions(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """A predictions file (format in the module doc) as ``{(id, turn): row}``."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"predictions file not found: {path}")
    return index_predictions(read_jsonl(path, "a prediction"), str(path))


def index_predictions(
    rows: Iterable[Mapping[str, Any]], where: str = "predictions"
) -> dict[tuple[str, int], dict]:
    """Check prediction rows and index them by ``(id, turn)``."""
    indexed: dict[tuple[str, int], dict[str, Any]] = {}
    for n, row in enumerate(rows, start=1):
        if not {"id", "turn", "answer"} <= set(row):
            raise EvalError(
                f"{where}: prediction {n} needs 'id', 'turn' and 'answer', got keys {sorted(row)}"
            )
        turn = row["turn"]
        if isinstance(turn, bool) or not isinstance(turn, int) or turn < 0:
            raise EvalError(f"{where}: prediction {n} has turn {turn!r}; expected a human-turn index >= 0")
        key = (str(row["id"]), turn)
        if key in indexed:
            raise EvalError(f"{where}: prediction {n} repeats id {key[0]!r} turn {turn}")
        indexed[key] = dict(row)
    return indexed


@contextmanager
def predictions_writer(path: Path) -> Iterator[Callable[[Iterable[Mapping[str, Any]]], None]]:
    """A fresh predictions file; the yielded function appends rows as JSON lines (UTF-8, keys in a
    fixed order) and flushes, so an interrupted run keeps every answer given so far."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:

        def save(rows: Iterable[Mapping[str, Any]]) -> None:
            for row in rows:
                ordered = {k: row[k] for k in ("id", "turn", "task", "answer", "dialect") if k in row}
                out.write(json.dumps(ordered, ensure_ascii=False) + "\n")
            out.flush()

        yield save
