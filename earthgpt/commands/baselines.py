"""``earthgpt baselines``: the honest baselines a model's numbers are shown beside.

    earthgpt baselines --data DIR [--split val] [--train-split train] --out report.json
                       [--markdown report.md] [--tasks vqa caption ...]
                       [--probe [--model nano] [--cache DIR] [--batch-size 32] [--image-root NAME=DIR ...]]

- the **prior** (:mod:`earthgpt.eval.baselines`): every evaluated question answered with the
  training split's prior answer of its group, scored by the evaluation runner;
- with ``--probe``, a **linear probe** (:mod:`earthgpt.eval.probe`) on the model's frozen visual
  features for the classification records, its answers scored by the same runner.

Writes ``report.json`` (``prior``: the runner's report plus the answer of each group; ``probe``)
and a Markdown summary (default: next to ``--out``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from earthgpt.commands.eval import _root
from earthgpt.tasks import Task

CLASSIFICATION = "classification"
EXIT_BAD_INPUT = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``earthgpt baselines``."""
    parser.add_argument("--data", type=Path, required=True, help="MMRS set: a folder of <split>.jsonl files")
    parser.add_argument("--split", default="val", help="split to evaluate (default val)")
    parser.add_argument(
        "--train-split", default="train", help="split the baselines learn from (default train)"
    )
    parser.add_argument("--out", type=Path, required=True, help="report JSON to write")
    parser.add_argument("--markdown", type=Path, help="Markdown summary to write (default: next to --out)")
    parser.add_argument("--tasks", nargs="+", choices=[t.value for t in Task], help="only these tasks")
    parser.add_argument("--limit", type=int, help="score the prior on at most N items per task, chosen "
                        "as `earthgpt eval --limit N` chooses them (same subset as the model's numbers)")
    parser.add_argument("--probe", action="store_true", help="also fit the linear probe (classification)")
    parser.add_argument("--model", default="nano", help="model whose visual features the probe reads")
    parser.add_argument("--cache", type=Path, help="feature cache folder (default <EARTHGPT_CACHE>/probe)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (probe)")
    parser.add_argument(
        "--image-root", type=_root, action="append", default=[], metavar="NAME=DIR",
        help="folder of the images of root NAME (repeatable; probe)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Fit and score the baselines, write the report; exit status (2 for bad input)."""
    from earthgpt.data.mmrs_reader import read_records
    from earthgpt.eval.inputs import EvalError
    from earthgpt.eval.report import write_json

    started = time.perf_counter()
    try:
        train = read_records(args.data, args.train_split)
        evaluated = read_records(args.data, args.split)
        report: dict[str, Any] = {"prior": prior_report(train, evaluated, args.tasks, args.limit)}
        if args.probe:
            report["probe"] = probe_report(train, evaluated, args)
    except (EvalError, OSError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    report["summary"] = {
        "data": str(args.data), "split": args.split, "train_split": args.train_split,
        "train_records": len(train), "eval_records": len(evaluated),
        "seconds": round(time.perf_counter() - started, 1),
    }
    markdown = args.markdown or args.out.with_suffix(".md")
    write_json(report, args.out)
    markdown.parent.mkdir(parents=True, exist_ok=True)
    text = baselines_markdown(report)
    markdown.write_text(text)
    print(text)
    print(f"report written to {args.out} and {markdown}", file=sys.stderr)
    return 0


def prior_report(
    train: Sequence[Mapping[str, Any]],
    evaluated: Sequence[Mapping[str, Any]],
    tasks: Sequence[str] | None,
    limit: int | None = None,
) -> dict[str, Any]:
    """The runner's report of the prior's answers, plus the answer each group gave."""
    from earthgpt.eval.baselines import prior_predictions, prior_table
    from earthgpt.eval.runner import evaluate

    rows = prior_predictions(train, evaluated, tasks=tasks)
    report = evaluate(evaluated, predictions=rows, tasks=tasks, limit=limit)
    report["groups"] = prior_table(rows)
    return report


def classification_items(records: Sequence[Mapping[str, Any]]) -> list[tuple[int, int, str]]:
    """``(record index, turn, class name)`` of every classification turn."""
    from earthgpt.eval.inputs import all_turns

    return [(t.record, t.turn, t.answer.strip()) for t in all_turns(records) if t.task == CLASSIFICATION]


def load_vision(model: str) -> tuple[Any, Callable[..., Any], Any]:
    """``(vision module, preprocess, config)`` of a model (preset name or checkpoint folder)."""
    from earthgpt.inference import load_model

    loaded, processor = load_model(model)
    return loaded.vision, processor.preprocess_image, loaded.config


def probe_report(
    train: Sequence[Mapping[str, Any]], evaluated: Sequence[Mapping[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    """Fit the linear probe on the training classification images, score it on the evaluated ones
    (also through the runner, so per-class numbers come from the same code as the model's)."""
    from earthgpt.data.image_resolver import ImageResolver
    from earthgpt.data.mmrs_reader import records_folder
    from earthgpt.eval.predictor import read_rgb
    from earthgpt.eval.probe import cached_features, encoder_identity, extract_features, linear_probe
    from earthgpt.eval.runner import evaluate
    from earthgpt.model.base_cache import cache_dir

    started = time.perf_counter()
    vision, preprocess, config = load_vision(args.model)
    identity = encoder_identity(vision, config)
    resolver = ImageResolver([records_folder(args.data)], dict(args.image_root))
    cache = args.cache or cache_dir() / "probe"
    features, labels = {}, {}
    for name, records in (("train", train), ("eval", evaluated)):
        items = classification_items(records)
        if not items:
            raise ValueError(f"no classification turns in the {name} records: nothing to probe")
        paths = [resolver(records[i]) for i, _, _ in items]
        sensors = [records[i].get("sensor") for i, _, _ in items]
        by_path = dict(zip(paths, sensors, strict=True))

        def compute(paths: list[Path] = paths, by_path: dict = by_path) -> Any:
            return extract_features(
                paths, lambda p: read_rgb(p, by_path[p]), preprocess, vision,
                batch_size=args.batch_size, progress=not args.no_progress,
            )

        features[name], _ = cached_features(paths, identity, cache, compute)
        labels[name] = [label for _, _, label in items]
    result = linear_probe(features["train"], labels["train"], features["eval"], labels["eval"])
    eval_items = classification_items(evaluated)
    rows = [
        {"id": str(evaluated[i]["id"]), "turn": turn, "answer": answer}
        for (i, turn, _), answer in zip(eval_items, result.predictions, strict=True)
    ]
    # "report": on the same items as the model (--limit); the probe's own accuracy covers them all
    scored = evaluate(evaluated, predictions=rows, tasks=[CLASSIFICATION], limit=getattr(args, "limit", None))
    return {
        **result.as_dict(),
        "model": args.model,
        "encoder_identity": identity[:16],
        "feature_channels": int(features["train"].shape[1]),
        "report": scored,
        "seconds": round(time.perf_counter() - started, 1),
    }


def baselines_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: the prior's answers and scores, then the probe."""
    from earthgpt.eval.report import markdown_summary

    prior = report["prior"]
    lines = [markdown_summary(prior, "Prior baseline (blind: one answer per group, from training)")]
    lines += ["## Prior answers", "", "| group | answer | turns |", "|---|---|---|"]
    for group, entry in prior.get("groups", {}).items():
        answer = str(entry["answer"]).replace("\n", " ").replace("|", "\\|")
        lines.append(f"| {group} | {answer} | {entry['turns']} |")
    probe = report.get("probe")
    if probe:
        lines += [
            "", f"# Linear probe on the frozen visual features of {probe['model']}", "",
            f"- top-1 accuracy: {probe['accuracy']:.4f} "
            f"({probe['n_eval']} images, {probe['classes']} classes)",
            f"- trained on {probe['n_train']} images; features: {probe['feature_channels']} channels, "
            f"{probe['pooling']}; l2 {probe['l2']:g} (held-out accuracy per l2: "
            + ", ".join(f"{k}: {v:.3f}" for k, v in probe["holdout_accuracy"].items()) + ")",
            "", "| class | accuracy |", "|---|---|",
        ]
        lines += [f"| {name} | {value:.4f} |" for name, value in probe["per_class_accuracy"].items()]
    return "\n".join(lines) + "\n"
