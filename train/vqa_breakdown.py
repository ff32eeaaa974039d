"""VQA accuracy per dataset and question type, beside two blind baselines fitted on the train split.

    python -m train.vqa_breakdown --data mmrs reports/nano_val_vqa_all.predictions.jsonl [MORE ...]

``earthgpt eval`` reports VQA per source and per question type apart; this crosses the two, for one
or more ``*.predictions.jsonl`` files side by side (answers matched as the evaluation matches them,
:func:`earthgpt.eval.vqa.vqa_match`), and adds two answers that never look at the image:

- **type prior**: the commonest train answer of the turn's dataset and question type;
- **question prior**: the commonest train answer of the same dataset and the same question text
  (the type prior where train never asked it).

A cell is ``–`` where a column answered none of the row's turns (a prior on a dataset without train
VQA); the **all** row counts every unanswered turn as wrong, so its columns share one denominator.
A predictions file that does not answer exactly the split's VQA turns (a ``--limit`` run, another
split) gets a warning on stderr.

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

from earthgpt.eval.baselines import majority_answer
from earthgpt.eval.vqa import vqa_match

Row = tuple[str, str]
"""(dataset, question type)."""
PRIORS = ("type prior", "question prior")


def _vqa_turns(records: Sequence[Mapping[str, Any]]) -> list[tuple[Row, str, Any]]:
    from earthgpt.eval.inputs import all_turns

    turns = [t for t in all_turns(records) if t.task == "vqa"]
    rows = [(str(records[t.record].get("dataset") or "?"), str(t.question_type or "")) for t in turns]
    return [(row, t.question.strip().lower(), t) for row, t in zip(rows, turns, strict=True)]


def blind_answers(
    train: Sequence[Mapping[str, Any]], val: Sequence[Mapping[str, Any]]
) -> dict[str, dict[tuple[str, int], str]]:
    """The type prior's and the question prior's answer to every VQA turn of ``val``, by ``(id, turn)``
    (no answer where train has no VQA turn of that dataset and type)."""
    by_row: dict[Row, list[str]] = defaultdict(list)
    by_question: dict[tuple[Row, str], list[str]] = defaultdict(list)
    for row, question, turn in _vqa_turns(train):
        by_row[row].append(turn.answer)
        by_question[row, question].append(turn.answer)
    answers: dict[str, dict[tuple[str, int], str]] = {name: {} for name in PRIORS}
    for row, question, turn in _vqa_turns(val):
        if row not in by_row:
            continue
        key = (turn.record_id, turn.turn)
        answers["type prior"][key] = majority_answer(by_row[row])
        asked = by_question.get((row, question))
        answers["question prior"][key] = majority_answer(asked) if asked else answers["type prior"][key]
    return answers


def breakdown(
    val: Sequence[Mapping[str, Any]], columns: Mapping[str, Mapping[tuple[str, int], str]]
) -> dict[Row, dict[str, int]]:
    """Per (dataset, question type): ``n`` VQA turns, how many each column answers right (``name``)
    and how many it answers at all (``name?``). A turn a column did not answer counts as wrong."""
    table: dict[Row, dict[str, int]] = {}
    for row, _, turn in _vqa_turns(val):
        counts = table.setdefault(row, {"n": 0, **{k: 0 for name in columns for k in (name, name + "?")}})
        counts["n"] += 1
        for name, answers in columns.items():
            answer = answers.get((turn.record_id, turn.turn))
            counts[name + "?"] += answer is not None
            counts[name] += answer is not None and vqa_match(answer, turn.answer)
    return dict(sorted(table.items()))


def coverage(wanted: set[tuple[str, int]], name: str, answers: Mapping[tuple[str, int], str]) -> str | None:
    """A warning when a predictions file does not answer every VQA turn ``wanted`` of the split (a
    ``--limit`` run: its unanswered turns count as wrong) or answers turns that are not among them
    (another split or another build); None when it answers exactly them."""
    answered = len(wanted & answers.keys())
    stray = len(answers.keys() - wanted)
    if answered == len(wanted) and not stray:
        return None
    words = [f"{name} answers {answered:,} of the {len(wanted):,} VQA turns (the others count as wrong)"]
    if stray:
        words.append(f"and {stray:,} turns that are not VQA turns of this split: another split or build?")
    return "warning: " + " ".join(words)


def markdown(table: Mapping[Row, Mapping[str, int]], names: Sequence[str]) -> str:
    """The table, one row per (dataset, question type) and a total, accuracies with the right counts
    (``–`` where a column answered none of the row's turns; the total counts those as wrong)."""
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
    cells = [f"{counts[name] / n:.3f} ({counts[name]})" if counts[name + "?"] else "–" for name in names]
    return f"| {dataset} | {qtype} | {n:,} | " + " | ".join(cells) + " |"


def column_names(paths: Sequence[Path]) -> list[str]:
    """A column name per predictions file: its name without ``.predictions.jsonl``, or the path as
    given where two files share a name or a file takes a prior's name."""
    stems = [path.name.removesuffix(".predictions.jsonl") for path in paths]
    taken = Counter(stems) + Counter(PRIORS)
    return [stem if taken[stem] == 1 else str(path) for stem, path in zip(stems, paths, strict=True)]


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
        if len(set(args.predictions)) < len(args.predictions):
            raise ValueError("a predictions file is named twice")
        columns: dict[str, Mapping[tuple[str, int], str]] = {}
        for name, path in zip(column_names(args.predictions), args.predictions, strict=True):
            columns[name] = {key: str(row["answer"]) for key, row in load_predictions(path).items()}
    except (DataError, EvalError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    wanted = {(turn.record_id, turn.turn) for _, _, turn in _vqa_turns(val)}
    for name, answers in columns.items():
        if (warning := coverage(wanted, name, answers)) is not None:
            print(warning, file=sys.stderr)
    columns.update(blind_answers(train, val))
    print(markdown(breakdown(val, columns), list(columns)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
