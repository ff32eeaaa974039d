"""How often the detection stop rule would cut answers: reference answers (it should cut none) and a
model's saved answers (what it saves there).

    python -m earthgpt.eval.stop_audit --data mmrs [--predictions reports/x.predictions.jsonl ...]

The rule (:func:`earthgpt.scene_detection.detection_stop_rule`) is run as generation runs it, one
line at a time; an answer is *cut* when the rule refuses one of its lines, and keeps the lines
before that one. For the reference answers of each split it prints how many of the detection
answers (HBB and OBB) it cuts, by dataset, and the first few; for each predictions file, how many
answers it cuts and how many box lines they keep. Exit status 1 when a reference answer is cut.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from earthgpt.answer_stream import LineRule
from earthgpt.data.mmrs_reader import DataError, read_jsonl, read_records, record_turns
from earthgpt.scene_detection import detection_stop_rule

DETECTION_TASKS = ("detection_hbb", "detection_obb")


@dataclass(frozen=True)
class Audit:
    """What the rule does to a set of answers: ``cut`` holds ``(name, line kept)`` per cut answer."""

    answers: int
    lines: int
    kept: int
    cut: list[tuple[str, int]]


def kept_lines(text: str, rule: LineRule) -> tuple[int, bool]:
    """How many non-blank lines of ``text`` the rule lets through, and whether it refused one."""
    lines = [line for line in text.splitlines() if line.strip()]
    for k in range(1, len(lines) + 1):
        if rule(lines[:k]):
            return k - 1, True
    return len(lines), False


def audit(named_answers: Iterable[tuple[str, str]], rule: LineRule | None = None) -> Audit:
    """Run ``rule`` (default :func:`detection_stop_rule`) over ``(name, answer)`` pairs."""
    rule = rule or detection_stop_rule()
    answers = lines = kept = 0
    cut: list[tuple[str, int]] = []
    for name, text in named_answers:
        k, refused = kept_lines(text, rule)
        answers += 1
        lines += sum(1 for line in text.splitlines() if line.strip())
        kept += k
        if refused:
            cut.append((name, k))
    return Audit(answers, lines, kept, cut)


def reference_answers(data: Path, split: str) -> list[tuple[str, str]]:
    """``(record id, answer)`` of every detection turn of ``split`` of the MMRS set ``data`` (none
    when the set has no record of ``split``)."""
    records = read_records(data)
    return [(turn.record_id, turn.answer) for i, record in enumerate(records) if record.get("split") == split
            for turn in record_turns(record, i) if turn.task in DETECTION_TASKS]


def saved_answers(path: Path) -> list[tuple[str, str]]:
    """``(id, answer)`` of the detection rows of a predictions file (rows without a task count)."""
    return [(str(row.get("id")), str(row.get("answer", ""))) for row in read_jsonl(path, "prediction")
            if row.get("task", DETECTION_TASKS[0]) in DETECTION_TASKS]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m earthgpt.eval.stop_audit",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="MMRS set (a folder of <split>.jsonl files)")
    parser.add_argument("--splits", nargs="+", default=["train", "val", "test"],
                        help="splits whose reference answers to audit")
    parser.add_argument("--predictions", type=Path, nargs="*", default=[],
                        help="saved answers of `earthgpt eval` (JSONL with id and answer)")
    args = parser.parse_args(argv)
    try:
        refs = {split: reference_answers(args.data, split) for split in args.splits}
        preds = {path: saved_answers(path) for path in args.predictions}
    except (DataError, OSError) as err:
        parser.exit(2, f"error: {err}\n")
    failed = False
    for split, answers in refs.items():
        if not answers:
            print(f"reference {split}: no detection answers")
            continue
        result = audit(answers)
        failed |= bool(result.cut)
        by_dataset = Counter(name.split("/")[0] for name, _ in result.cut)
        print(f"reference {split}: {len(result.cut)} of {result.answers} detection answers cut "
              f"({result.lines} box lines){f'; by dataset {dict(by_dataset)}' if by_dataset else ''}")
        for name, k in result.cut[:5]:
            print(f"  {name}: cut after {k} lines")
    for path, answers in preds.items():
        result = audit(answers)
        print(f"{path}: {len(result.cut)} of {result.answers} answers cut; "
              f"{result.kept} of {result.lines} lines kept")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
