"""Evaluate a model, or its saved answers, on MMRS records: every metric per task, sensor and source.

Two ways in:

- **predictions mode**: ``evaluate(records, predictions=rows)``, where the rows follow the
  predictions-file format of :mod:`earthgpt.eval.inputs` (``id``, ``turn``, ``answer``, optional
  ``dialect``). Turns without a prediction are left out of the metrics and counted.
- **model mode**: ``evaluate(records, predict_fn=fn)``, or first ``rows = run_predictions(records,
  fn)`` to keep the raw answers (the CLI writes them next to the report so they can be rescored).
  ``fn(record, turns) -> answers`` answers the given turns of one record in order;
  :class:`ChatPredictor` does it with :class:`earthgpt.inference.ChatSession` (one session per
  record, turns asked in order, so later questions see the model's own earlier answers).

For captions only the first caption turn of a record is asked (all its caption turns are the
references); ``limit`` keeps the first N items of each task.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from earthgpt.data.mmrs_reader import RecordTurn, human_turn_count
from earthgpt.eval.inputs import EvalError, all_turns, index_predictions
from earthgpt.eval.scoring import build_cases, score_task
from earthgpt.tasks import Task

PredictFn = Callable[[Mapping[str, Any], Sequence[RecordTurn]], Sequence[str]]
TASK_ORDER = tuple(t.value for t in Task)


def select_turns(
    records: Sequence[Mapping[str, Any]],
    *,
    tasks: Iterable[str] | None = None,
    limit: int | None = None,
    answered: Container[tuple[str, int]] | None = None,
) -> list[RecordTurn]:
    """The turns to ask or score: every scorable turn (see :mod:`earthgpt.eval.inputs`) of the
    wanted tasks (only those in ``answered`` when given), only the first caption turn per record,
    at most ``limit`` per task, spread evenly over the task's turns in record order (turn
    ``floor(i · n / limit)`` for i < limit, so a quick run still sees every dataset and question
    type), returned in record order."""
    wanted = set(tasks) if tasks is not None else set(TASK_ORDER)
    unknown = wanted - set(TASK_ORDER)
    if unknown:
        raise EvalError(f"unknown task(s) {sorted(unknown)}; expected some of {list(TASK_ORDER)}")
    if limit is not None and limit < 1:
        raise EvalError(f"limit must be a positive number of items per task, got {limit}")
    eligible: list[RecordTurn] = []
    captioned: set[int] = set()
    for ref in all_turns(records):
        if ref.task not in wanted or (answered is not None and (ref.record_id, ref.turn) not in answered):
            continue
        if ref.task == "caption":
            if ref.record in captioned:
                continue
            captioned.add(ref.record)
        eligible.append(ref)
    if limit is None:
        return eligible
    by_task: dict[str, list[int]] = {}
    for position, ref in enumerate(eligible):
        by_task.setdefault(ref.task, []).append(position)
    keep = {
        positions[i * len(positions) // limit] if len(positions) > limit else positions[i]
        for positions in by_task.values()
        for i in range(min(limit, len(positions)))
    }
    return [ref for position, ref in enumerate(eligible) if position in keep]


def run_predictions(
    records: Sequence[Mapping[str, Any]],
    predict_fn: PredictFn,
    turns: Sequence[RecordTurn] | None = None,
    *,
    dialect: str = "earthgpt",
    progress: bool = True,
    errors: list[dict[str, Any]] | None = None,
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Ask ``predict_fn`` every selected turn, one call per record; returns prediction rows.

    With ``errors`` given, a record whose ``predict_fn`` call raises ValueError or OSError (an
    unreadable or missing image) is skipped, its turns stay unanswered and ``{"id", "turns",
    "error"}`` is appended to ``errors``; without it the error propagates. ``on_rows`` gets each
    record's rows as soon as they are answered (the CLI appends them to the predictions file).
    """
    from tqdm import tqdm

    turns = select_turns(records) if turns is None else turns
    by_record: dict[int, list[RecordTurn]] = {}
    for ref in turns:
        by_record.setdefault(ref.record, []).append(ref)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(turns), desc="answering", unit="turn", disable=not progress)
    for index, refs in by_record.items():
        try:
            answers = list(predict_fn(records[index], refs))
        except (ValueError, OSError) as error:
            if errors is None:
                raise
            errors.append({"id": refs[0].record_id, "turns": [ref.turn for ref in refs],
                           "error": f"{type(error).__name__}: {error}"})
            bar.update(len(refs))
            continue
        if len(answers) != len(refs):
            raise EvalError(
                f"predict_fn returned {len(answers)} answers for {len(refs)} turns "
                f"of record {refs[0].record_id!r}"
            )
        new = [
            {"id": ref.record_id, "turn": ref.turn, "task": ref.task, "answer": str(answer),
             "dialect": dialect}
            for ref, answer in zip(refs, answers, strict=True)
        ]
        rows.extend(new)
        if on_rows is not None:
            on_rows(new)
        bar.update(len(refs))
    bar.close()
    return rows


def _check_ids(records: Sequence[Mapping[str, Any]], answers: Mapping[tuple[str, int], Any]) -> None:
    """Every prediction must name an existing record and one of its human turns."""
    turns_of = {str(record["id"]): human_turn_count(record) for record in records}
    unknown = [key for key in answers if key[0] not in turns_of]
    if unknown and len(unknown) == len(answers):
        raise EvalError(
            f"none of the {len(answers)} predictions matches a record id of the data "
            f"(first prediction id {unknown[0][0]!r}, first record id {next(iter(turns_of), None)!r}); "
            "are the predictions for another split or dataset?"
        )
    if unknown:
        shown = ", ".join(repr(k[0]) for k in unknown[:5])
        raise EvalError(f"{len(unknown)} predictions name record ids that are not in the data, e.g. {shown}")
    bad_turns = [key for key in answers if key[1] >= turns_of[key[0]]]
    if bad_turns:
        rid, turn = bad_turns[0]
        raise EvalError(
            f"{len(bad_turns)} predictions name a turn the record does not have, e.g. id {rid!r} turn {turn} "
            f"(it has {turns_of[rid]} human turns, numbered from 0)"
        )


def evaluate(
    records: Sequence[Mapping[str, Any]],
    predict_fn: PredictFn | None = None,
    *,
    predictions: Iterable[Mapping[str, Any]] | None = None,
    dialect: str = "earthgpt",
    tasks: Iterable[str] | None = None,
    limit: int | None = None,
    progress: bool = False,
    errors: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Score ``predictions`` (rows) or the answers of ``predict_fn`` on ``records``.

    Returns the report dict: ``{"summary": {...}, "tasks": {task: {"all", "by_sensor",
    "by_source", "parse"?}}}`` (see ``docs/EVAL.md``). Exactly one of ``predict_fn`` and
    ``predictions`` must be given. Records that could not be answered (``predict_fn`` raised,
    or ``errors`` from an earlier :func:`run_predictions`) are listed in ``summary["errors"]``
    and their turns counted as unanswered.
    """
    if (predict_fn is None) == (predictions is None):
        raise EvalError("evaluate needs exactly one of predict_fn (a model) or predictions (saved answers)")
    tasks = list(tasks) if tasks is not None else None
    errors = [dict(e) for e in errors]
    if predict_fn is not None:
        asked = select_turns(records, tasks=tasks, limit=limit)
        predictions = run_predictions(records, predict_fn, asked, dialect=dialect, progress=progress,
                                      errors=errors)
    answers = index_predictions(predictions or [])
    _check_ids(records, answers)
    turns = select_turns(records, tasks=tasks, limit=limit, answered=answers)
    cases = build_cases(records, turns, answers, dialect)
    report_tasks: dict[str, Any] = {}
    for task in TASK_ORDER:
        if task in cases.by_task:
            report_tasks[task] = score_task(task, cases.by_task[task])
            if task in cases.parse:
                report_tasks[task]["parse"] = cases.parse[task].as_dict()
    wanted = select_turns(records, tasks=tasks, limit=limit)  # the turns this run was meant to score
    unanswered = sum((t.record_id, t.turn) not in answers for t in wanted)
    summary = {
        "records": len(records),
        "turns_scored": len(turns),
        "turns_unanswered": unanswered,
        "dialect": dialect,
        "tasks": list(report_tasks),
        "errors": errors,
    }
    return {"summary": summary, "tasks": report_tasks}


def default_output_paths(report: Path) -> dict[str, Path]:
    """Where the CLI writes the Markdown summary and the raw predictions next to ``report``."""
    report = Path(report)
    return {
        "markdown": report.with_suffix(".md"),
        "predictions": report.with_name(report.stem + ".predictions.jsonl"),
    }
