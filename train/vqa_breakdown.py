"""VQA accuracy per dataset and question type, beside two blind baselines fitted on the train split.

    python -m train.vqa_breakdown --data mmrs reports/nano_val_vqa_all.predictions.jsonl [MORE ...]

``earthgpt eval`` reports VQA per source and per question type apart; this crosses the two, for one
or more ``*.predictions.jsonl`` files side by side (answers matched as the evaluation matches them,
:func:`earthgpt.eval.vqa.vqa_match`), and adds two answers that never look at the image:

- **type prior**: the commonest train answer of the turn's dataset and question type;
- **question prior**: the commonest train answer of the same dataset and the same question text
  (the type prior where train never asked it).

Both know the dataset, which the prompt does not name (``earthgpt baselines``' prior groups by
sensor and question type only). So the question prior marks what a model gets by telling which
dataset an image comes from and learning that dataset's answer statistics, without reading what is
in the image; a model under it on a row has not learned those statistics yet.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from earthgpt.eval.normalize import answer_key
from earthgpt.eval.vqa import vqa_match

Row = tuple[str, str]
"""(dataset, question type)."""


def _vqa_turns(records: Sequence[Mapping[str, Any]]) -> list[tuple[Row, str, Any]]:
    from earthgpt.eval.inputs import all_turns

    turns = [t for t in all_turns(records) if t.task == "vqa"]
    rows = [(str(records[t.record].get("dataset") or "?"), str(t.question_type or "")) for t in turns]
    return [(row, t.question.strip().lower(), t) for row, t in zip(rows, turns, strict=True)]


def _commonest(answers: Counter[str]) -> str:
    """The most frequent answer key (ties: the smaller key)."""
    return min(answers.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def blind_answers(
    train: Sequence[Mapping[str, Any]], val: Sequence[Mapping[str, Any]]
) -> dict[str, dict[tuple[str, int], str]]:
    """The type prior's and the question prior's answer to every VQA turn of ``val``, by ``(id, turn)``
    (no answer where train has no VQA turn of that dataset and type)."""
    by_row: dict[Row, Counter[str]] = defaultdict(Counter)
    by_question: dict[tuple[Row, str], Counter[str]] = defaultdict(Counter)
    for row, question, turn in _vqa_turns(train):
        key = answer_key(turn.answer)
        by_row[row][key] += 1
        by_question[row, question][key] += 1
    answers: dict[str, dict[tuple[str, int], str]] = {"type prior": {}, "question prior": {}}
    for row, question, turn in _vqa_turns(val):
        if row not in by_row:
            continue
        key = (turn.record_id, turn.turn)
        answers["type prior"][key] = _commonest(by_row[row])
        asked = by_question.get((row, question))
        answers["question prior"][key] = _commonest(asked) if asked else answers["type prior"][key]
    return answers


def breakdown(
    val: Sequence[Mapping[str, Any]], columns: Mapping[str, Mapping[tuple[str, int], str]]
) -> dict[Row, dict[str, int]]:
    """Per (dataset, question type): ``n`` VQA turns and how many each column answers right (a turn a
    column did not answer counts as wrong)."""
    table: dict[Row, dict[str, int]] = {}
    for row, _, turn in _vqa_turns(val):
        counts = table.setdefault(row, {"n": 0, **{name: 0 for name in columns}})
        counts["n"] += 1
        for name, answers in columns.items():
            answer = answers.get((turn.record_id, turn.turn))
            counts[name] += answer is not None and vqa_match(answer, turn.answer)
    return dict(sorted(table.items()))


def markdown(table: Mapping[Row, Mapping[str, int]], names: Sequence[str]) -> str:
    """The table, one row per (dataset, question type) and a total, accuracies with the right counts."""
    lines = [
        "| dataset | question type | n | " + " | ".join(names) + " |",
        "|---|---|---:|" + "---:|" * len(names),
    ]
    total: Counter[str] = Counter()
    for (dataset, qtype), counts in table.items():
        total.update(counts)
        lines.append(_line(dataset, qtype, counts, names))
    lines.append(_line("**all**", "", total, names))
    return "\n".join(lines)


def _line(dataset: str, qtype: str, counts: Mapping[str, int], names: Sequence[str]) -> str:
    n = counts["n"]
    cells = [f"{counts[name] / n:.3f} ({counts[name]})" if n else "–" for name in names]
    return f"| {dataset} | {qtype} | {n:,} | " + " | ".join(cells) + " |"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.vqa_breakdown", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("predictions", type=Path, nargs="+", help="earthgpt eval's *.predictions.jsonl")
    parser.add_argument("--data", type=Path, required=True, help="the MMRS build the answers were asked from")
    parser.add_argument("--split", default="val")
    args = parser.parse_args(argv)
    from earthgpt.data.mmrs_reader import DataError, read_records
    from earthgpt.eval.inputs import EvalError, load_predictions

    try:
        val = read_records(args.data, split=args.split)
        train = read_records(args.data, split="train")
        columns: dict[str, Mapping[tuple[str, int], str]] = {}
        for path in args.predictions:
            columns[path.name.removesuffix(".predictions.jsonl")] = {
                key: str(row["answer"]) for key, row in load_predictions(path).items()
            }
    except (DataError, EvalError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    columns.update(blind_answers(train, val))
    print(markdown(breakdown(val, columns), list(columns)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
