"""Reading an MMRS set (no torch): its record files, its records, and their question/answer turns.

Evaluation and training read records and turns here, so a record means the same to both.

**Files.** ``data`` is a ``.jsonl`` file or a folder; in a folder, ``<split>.jsonl`` when it
exists, else every ``*.jsonl`` under it (sorted, records then filtered by their ``split``).

**Turns.** A record's ``conversations`` are messages ``{"from": …, "value": …}`` (or chat style
``{"role": …, "content": …}``). Roles :data:`HUMAN_ROLES` ask, :data:`ASSISTANT_ROLES` answer.
Turn ``k`` of a record is its ``k``-th human message (0-based) together with the assistant message
that follows it; a human message without one is counted but gives no turn. The turn's task is the
``task`` of the human message, else of the assistant message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from earthgpt.conversation import IMAGE_PLACEHOLDER

HUMAN_ROLES = frozenset({"human", "user"})
ASSISTANT_ROLES = frozenset({"gpt", "assistant", "model"})


class DataError(ValueError):
    """Bad MMRS input: a missing or malformed file; a record without ``id``, ``conversations``
    or ``image``."""


@dataclass(frozen=True)
class RecordTurn:
    """One question of one record and its recorded answer (see the module doc)."""

    record: int  # index of the record in the list it was read from
    record_id: str
    turn: int  # k-th human message of the record (0-based)
    task: str | None
    question: str  # the human message with the image placeholder removed
    answer: str
    question_type: str | None = None
    generated: bool = False


def read_jsonl(path: Path, what: str) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file (``what`` names one line in errors); blank lines are skipped."""
    rows = []
    with Path(path).open(encoding="utf-8") as lines:
        try:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    rows.append(_json_object(line, f"{path}:{number}", what))
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: not UTF-8 text (expected JSON lines, {what} per line): {err}") from None
    return rows


def _json_object(line: str, where: str, what: str) -> dict[str, Any]:
    """One line of a JSON-lines file as an object; DataError naming ``where`` otherwise."""
    try:
        row = json.loads(line)
    except (ValueError, RecursionError) as err:  # not JSON, an integer too long, nesting too deep
        reason = err if isinstance(err, ValueError) else "nested too deeply"
        raise DataError(f"{where}: expected one JSON object per line ({what}), {reason}") from None
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object ({what}), got {type(row).__name__}")
    return row


def records_folder(data: Path) -> Path:
    """The folder of an MMRS set given as a file or a folder (where its images may also lie)."""
    data = Path(data)
    return data if data.is_dir() else data.parent


def record_files(data: Path, split: str | None = None) -> list[Path]:
    """The JSONL files of an MMRS set (see the module doc)."""
    data = Path(data)
    if data.is_file():
        return [data]
    if not data.is_dir():
        raise DataError(f"MMRS data not found: {data} (expected a .jsonl file or a folder of them)")
    if split and (data / f"{split}.jsonl").is_file():
        return [data / f"{split}.jsonl"]
    files = sorted(data.rglob("*.jsonl"))
    if not files:
        raise DataError(f"no .jsonl record files in {data}")
    return files


def read_records(data: Path, split: str | None = None) -> list[dict[str, Any]]:
    """The records of ``data`` (file or folder, see :func:`record_files`) whose ``split`` is ``split``
    (all records when ``split`` is None). Records need ``id`` and a ``conversations`` list; a set
    with no record of the split is an error."""
    records = []
    for path in record_files(data, split):
        for row in read_jsonl(path, "an MMRS record"):
            if "id" not in row or not isinstance(row.get("conversations"), list):
                raise DataError(
                    f"{path}: a record needs 'id' and a 'conversations' list, got keys {sorted(row)}"
                )
            if not all(isinstance(message, dict) for message in row["conversations"]):
                raise DataError(f"{path}: record {row['id']!r}: every message of 'conversations' must be an "
                                "object like {\"from\": \"human\", \"value\": …}")
            if split is None or row.get("split") == split:
                records.append(row)
    if not records:
        raise DataError(f"no records with split {split!r} in {data}")
    return records


def message_role(message: Mapping[str, Any]) -> str | None:
    """``"human"``, ``"assistant"``, or None for any other role, or for a message that is not an object
    (see the module doc)."""
    if not isinstance(message, Mapping):
        return None
    role = str(message.get("from", message.get("role", ""))).lower()
    if role in HUMAN_ROLES:
        return "human"
    return "assistant" if role in ASSISTANT_ROLES else None


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a message (``value``, or ``content`` for chat-style messages)."""
    return str(message.get("value", message.get("content", "")))


def record_turns(record: Mapping[str, Any], index: int = 0) -> list[RecordTurn]:
    """The turns of one record in order (see the module doc); ``index`` is the record's position."""
    messages = record.get("conversations")
    messages = messages if isinstance(messages, list) else []
    turns: list[RecordTurn] = []
    k = 0
    for i, message in enumerate(messages):
        if message_role(message) != "human":
            continue
        answer = messages[i + 1] if i + 1 < len(messages) else None
        if answer is not None and message_role(answer) == "assistant":
            task = message.get("task") or answer.get("task")
            turns.append(
                RecordTurn(
                    record=index,
                    record_id=str(record.get("id")),
                    turn=k,
                    task=str(task) if task else None,
                    question=message_text(message).replace(IMAGE_PLACEHOLDER, " ").strip(),
                    answer=message_text(answer),
                    question_type=message.get("question_type") or answer.get("question_type"),
                    generated=bool(message.get("generated") or answer.get("generated")),
                )
            )
        k += 1
    return turns


def human_turn_count(record: Mapping[str, Any]) -> int:
    """How many human messages (turns, answered or not) a record has."""
    messages = record.get("conversations")
    return sum(message_role(m) == "human" for m in messages) if isinstance(messages, list) else 0
