"""``earthgpt eval``: score a model, or saved predictions, on an MMRS set.

    earthgpt eval --data DIR|FILE [--split val] (--model NAME|PATH | --predictions FILE [--dialect geochat])
                  --out report.json [--markdown report.md] [--limit N] [--tasks vqa caption ...]

With ``--model`` the raw answers are saved next to the report (``<out stem>.predictions.jsonl``)
so they can be rescored with ``--predictions``. Metric definitions and the predictions format:
``docs/EVAL.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from earthgpt.commands import add_quantization_arguments
from earthgpt.tasks import TASK_SPECS, AnswerKind, Task

if TYPE_CHECKING:
    from earthgpt.eval.predictor import ChatPredictor

EXIT_BAD_INPUT = 2

STOP_RULE_TASKS = tuple(t.value for t, spec in TASK_SPECS.items() if spec.answer is AnswerKind.detections)
"""Tasks whose answers ``earthgpt eval`` decodes with the detection stop rule (unless ``--no-stop-rule``)."""


def _root(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR (image root name and folder), got {text!r}")
    return name, Path(path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``earthgpt eval``."""
    from earthgpt.box_dialects import DIALECTS

    parser.add_argument(
        "--data", type=Path, required=True, help="MMRS records: a .jsonl file or a folder of them"
    )
    parser.add_argument(
        "--split", default="val", help="split of the records (default val; 'all': every split)"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="model to answer the questions: preset name or checkpoint folder")
    source.add_argument("--predictions", type=Path, help="saved answers (JSONL: id, turn, answer[, dialect])")
    parser.add_argument(
        "--dialect",
        default="earthgpt",
        choices=sorted(DIALECTS),
        help="box dialect of the answers (default earthgpt)",
    )
    parser.add_argument("--out", type=Path, required=True, help="report JSON to write")
    parser.add_argument("--markdown", type=Path, help="Markdown summary to write (default: next to --out)")
    parser.add_argument("--limit", type=int, help="at most N items per task (quick runs)")
    parser.add_argument("--tasks", nargs="+", choices=[t.value for t in Task], help="only these tasks")
    parser.add_argument(
        "--image-root",
        type=_root,
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="folder of the images of root NAME (repeatable; model mode)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=256, help="answer length limit (model mode)")
    parser.add_argument(
        "--no-stop-rule",
        action="store_true",
        help="decode detection answers to the length limit (default: end one that repeats itself or "
        "marches a box along, as earthgpt detect and the app do; model mode)",
    )
    add_quantization_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Load the records, answer or read the predictions, score, write the report; exit status
    (2 for bad input: missing or malformed files, an unknown model, a missing quantization package)."""
    from earthgpt.data.mmrs_reader import DataError, read_records
    from earthgpt.eval.inputs import EvalError, load_predictions, predictions_writer
    from earthgpt.eval.report import markdown_summary, write_json, write_markdown
    from earthgpt.eval.runner import default_output_paths, evaluate, run_predictions, select_turns

    paths = default_output_paths(args.out)
    errors: list[dict[str, Any]] = []
    try:
        records = read_records(args.data, None if args.split == "all" else args.split)
        if args.predictions is not None:
            rows = list(load_predictions(args.predictions).values())
        else:
            predictor = _predictor(args)
            asked = select_turns(records, tasks=args.tasks, limit=args.limit)
            with predictions_writer(paths["predictions"]) as save:
                rows = run_predictions(records, predictor, asked, dialect=args.dialect,
                                       progress=not args.no_progress, errors=errors, on_rows=save)
            print(f"answers saved to {paths['predictions']}", file=sys.stderr)
        report = evaluate(records, predictions=rows, dialect=args.dialect, tasks=args.tasks, limit=args.limit,
                          errors=errors)
    except (EvalError, DataError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    report["summary"]["data"] = str(args.data)
    report["summary"]["split"] = args.split
    report["summary"]["answers_from"] = args.model or str(args.predictions)
    if args.predictions is None:
        report["summary"]["stopped_by_rule"] = dict(predictor.stopped)
    write_json(report, args.out)
    markdown = args.markdown or paths["markdown"]
    write_markdown(report, markdown)
    print(markdown_summary(report))
    print(f"report written to {args.out} and {markdown}", file=sys.stderr)
    _notes(report["summary"])
    if report["summary"]["turns_scored"] == 0:  # e.g. every image missing: nothing was measured
        print("error: no turn was scored (see the notes above); the report holds no score", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def _notes(summary: dict[str, Any]) -> None:
    if summary["errors"]:
        first = summary["errors"][0]
        print(f"note: {len(summary['errors'])} records could not be answered (listed in the report's "
              f"summary.errors), e.g. {first['id']!r}: {first['error']}", file=sys.stderr)
    if summary.get("stopped_by_rule"):
        counts = ", ".join(f"{task} {n}" for task, n in sorted(summary["stopped_by_rule"].items()))
        print(f"note: answers ended by the stop rule (a repeated or sliding box): {counts}", file=sys.stderr)
    if summary["turns_unanswered"]:
        print(
            f"note: {summary['turns_unanswered']} turns of the selected tasks have no answer "
            "and are not scored",
            file=sys.stderr,
        )


def _predictor(args: argparse.Namespace) -> ChatPredictor:
    from earthgpt.data.image_resolver import ImageResolver
    from earthgpt.data.mmrs_reader import records_folder
    from earthgpt.eval.predictor import ChatPredictor
    from earthgpt.inference import UNTRAINED_WARNING, is_untrained_start, load_model

    model, processor = load_model(args.model, load_4bit=args.load_4bit, load_8bit=args.load_8bit)
    if is_untrained_start(args.model):
        print(f"WARNING: {UNTRAINED_WARNING}", file=sys.stderr)
    resolver = ImageResolver([records_folder(args.data)], dict(args.image_root))
    rules = {}
    if not args.no_stop_rule:
        from earthgpt.scene_detection import detection_stop_rule

        rules = {task: detection_stop_rule() for task in STOP_RULE_TASKS}
    return ChatPredictor(model, processor, resolver, max_new_tokens=args.max_new_tokens, stop_rules=rules)
