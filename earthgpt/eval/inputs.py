"""What the evaluation reads: MMRS records, their question/answer turns, and saved predictions.

**Turns.** A record's ``conversations`` alternate human and assistant messages
(``{"from": "human"|"gpt"|"assistant", "value": …, "task": …}``). Turn ``k`` of a record is its
``k``-th human message (0-based) together with the assistant message that follows it; its task is
the ``task`` of the human message, else of the assistant message.

**Predictions file** (JSON lines, one object per answered turn)::

    {"id": "<record id>", "turn": <k>, "answer": "<raw model text>", "dialect": "geochat"}

``id`` and ``turn`` name the record and its ``k``-th human turn (as above, counting human turns
only, not list positions); ``answer`` is the model's raw text; ``dialect`` (optional) names the box
dialect of that answer (:data:`earthgpt.textbox.DIALECTS`) and overrides the dialect given to the
evaluation. Blank lines are ignored; a repeated ``(id, turn)`` is an error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from earthgpt.tasks import Task

HUMAN_ROLES = frozenset({"human", "user"})
ASSISTANT_ROLES = frozenset({"gpt", "assistant", "model"})
RECORD_FILE_PATTERNS = ("*.jsonl",)
TASKS = frozenset(t.value for t in Task)


class EvalError(ValueError):
    """Bad evaluation input (missing file, malformed line, predictions that do not fit the data)."""


@dataclass(frozen=True)
class TurnRef:
    """One question of one record: where it is, what it asks, and the reference answer."""

    record: int  # index of the record in the evaluated list
    record_id: str
    turn: int  # k-th human turn of the record (0-based)
    task: str
    question: str
    reference: str
    question_type: str | None = None
    generated: bool = False


def _read_jsonl(path: Path, what: str) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise EvalError(
                    f"{path}:{number}: expected one JSON object per line ({what}), {err}"
                ) from None
            if not isinstance(row, dict):
                raise EvalError(f"{path}:{number}: expected a JSON object ({what}), got {type(row).__name__}")
            rows.append(row)
    return rows


def record_files(data: Path, split: str | None = None) -> list[Path]:
    """The JSONL files of an MMRS set: ``data`` itself if it is a file; in a folder, ``<split>.jsonl``
    when it exists, else every ``*.jsonl`` file (records then filtered by their ``split``)."""
    data = Path(data)
    if data.is_file():
        return [data]
    if not data.is_dir():
        raise EvalError(f"MMRS data not found: {data} (expected a .jsonl file or a folder of them)")
    if split and (data / f"{split}.jsonl").is_file():
        return [data / f"{split}.jsonl"]
    files = sorted(p for pattern in RECORD_FILE_PATTERNS for p in data.rglob(pattern))
    if not files:
        raise EvalError(f"no .jsonl record files in {data}")
    return files


def load_records(data: Path, split: str | None = None) -> list[dict[str, Any]]:
    """The records of ``data`` (file or folder, see :func:`record_files`) whose ``split`` is ``split``
    (all records when ``split`` is None). Records need ``id`` and ``conversations``."""
    records = []
    for path in record_files(data, split):
        for row in _read_jsonl(path, "an MMRS record"):
            if "id" not in row or not isinstance(row.get("conversations"), list):
                raise EvalError(
                    f"{path}: a record needs 'id' and a 'conversations' list, got keys {sorted(row)}"
                )
            if split is None or row.get("split") == split:
                records.append(row)
    if not records:
        raise EvalError(f"no records with split {split!r} in {data}")
    return records


def _role(message: Mapping[str, Any]) -> str:
    return str(message.get("from", message.get("role", ""))).lower()


def _text(message: Mapping[str, Any]) -> str:
    return str(message.get("value", message.get("content", "")))


def record_turns(record: Mapping[str, Any], index: int = 0) -> list[TurnRef]:
    """The question/answer turns of one record (see the module doc); a human message without a
    following assistant message, or with an unknown task, is not a scorable turn and is left out."""
    messages = list(record.get("conversations") or [])
    turns: list[TurnRef] = []
    k = 0
    for i, message in enumerate(messages):
        if _role(message) not in HUMAN_ROLES:
            continue
        answer = messages[i + 1] if i + 1 < len(messages) else None
        if answer is not None and _role(answer) in ASSISTANT_ROLES:
            task = message.get("task") or answer.get("task")
            if task in TASKS:
                turns.append(
                    TurnRef(
                        record=index,
                        record_id=str(record["id"]),
                        turn=k,
                        task=str(task),
                        question=_text(message),
                        reference=_text(answer),
                        question_type=message.get("question_type") or answer.get("question_type"),
                        generated=bool(message.get("generated") or answer.get("generated")),
                    )
                )
        k += 1
    return turns


def all_turns(records: Iterable[Mapping[str, Any]]) -> list[TurnRef]:
    """Every scorable turn of every record, in record then turn order."""
    return [t for i, record in enumerate(records) for t in record_turns(record, i)]


def load_predictions(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """A predictions file (format in the module doc) as ``{(id, turn): row}``."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"predictions file not found: {path}")
    return index_predictions(_read_jsonl(path, "a prediction"), str(path))


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


def write_predictions(rows: Iterable[Mapping[str, Any]], path: Path) -> None:
    """Write prediction rows as JSON lines (UTF-8, one object per line, keys in a fixed order)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            ordered = {k: row[k] for k in ("id", "turn", "task", "answer", "dialect") if k in row}
            out.write(json.dumps(ordered, ensure_ascii=False) + "\n")
