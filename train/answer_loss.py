"""Teacher-forced loss of a model on an MMRS split's reference answers, per task, with the
coordinates of box answers apart: a continuous measure of localisation that moves long before
mAP@0.5 or Acc@0.5 leave zero.

    python -m train.answer_loss --model runs/x/export --data mmrs --tasks grounding detection_hbb \\
        --limit 100 --out reports/x_answer_loss.json

Each selected turn (``earthgpt.eval.runner.select_turns``: the same turns ``earthgpt eval`` asks
with the same ``--limit``) is scored on its own: the image, that turn's question and its reference
answer, the answer's tokens labelled as training labels them (the end-of-turn token included).
Per task it reports the mean cross-entropy (nats per token) over all answer tokens and over the
digit tokens of numbers (box coordinates; the nano tokenizer writes one token per digit), the
share of digit tokens the model ranks first, the same share for each number's **leading** digit
(for a coordinate on the 0–1000 grid that is its position to within 100, a tenth of the image),
and that share for the leading digits of each box's **first x and y** only (the first two numbers
after ``[``): where a box starts is the model's guess of where an object is, while x2, y2 and the
later corners follow from it and are easier. Lower loss and higher shares mean the model puts
more of its probability on the right places.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from earthgpt.conversation import IGNORE_INDEX


def digit_token_ids(tokenizer: Any) -> set[int]:
    """Ids of the tokens that are one or more decimal digits and nothing else."""
    return {i for token, i in tokenizer.get_vocab().items() if token.isascii() and token.isdigit()}


def bracket_token_ids(tokenizer: Any) -> tuple[set[int], set[int]]:
    """Ids of the tokens that hold ``[`` and of those that hold ``]``."""
    vocab = tokenizer.get_vocab()
    opening = {i for token, i in vocab.items() if "[" in token}
    return opening, {i for token, i in vocab.items() if "]" in token}


def box_start_mask(
    targets: list[int], is_leading: list[bool], opening: set[int], closing: set[int]
) -> list[bool]:
    """Which leading digits begin the first or second number after an opening bracket."""
    out, numbers, inside = [], 0, False
    for token, leading in zip(targets, is_leading, strict=True):
        if token in opening:
            inside, numbers = True, 0
        elif token in closing:
            inside = False
        start = inside and leading and numbers < 2
        numbers += int(inside and leading)
        out.append(start)
    return out


def turn_statistics(
    logits: torch.Tensor, targets: torch.Tensor, digits: set[int],
    brackets: tuple[set[int], set[int]] = (set(), set()),
) -> dict[str, float]:
    """Sums for one answer: ``logits`` ``(n, vocab)`` predict ``targets`` ``(n,)``; ``brackets``
    (:func:`bracket_token_ids`) find where each box starts."""
    losses = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    top = logits.argmax(-1) == targets
    ids = targets.tolist()
    is_digit = torch.tensor([int(t) in digits for t in ids], dtype=torch.bool)
    leading = is_digit.clone()
    leading[1:] &= ~is_digit[:-1]
    starts = torch.tensor(box_start_mask(ids, leading.tolist(), *brackets), dtype=torch.bool)
    return {
        "tokens": float(targets.numel()),
        "loss_sum": float(losses.sum()),
        "digit_tokens": float(is_digit.sum()),
        "digit_loss_sum": float(losses[is_digit].sum()),
        "digit_top1": float(top[is_digit].sum()),
        "leading_digits": float(leading.sum()),
        "leading_top1": float(top[leading].sum()),
        "box_starts": float(starts.sum()),
        "box_start_top1": float(top[starts].sum()),
    }


def summarise(sums: Mapping[str, float], items: int) -> dict[str, float | int | None]:
    """Means and shares from the summed :func:`turn_statistics` of ``items`` turns."""

    def ratio(a: str, b: str) -> float | None:
        return round(sums[a] / sums[b], 4) if sums.get(b) else None

    return {
        "items": items,
        "answer_tokens": int(sums.get("tokens", 0)),
        "loss": ratio("loss_sum", "tokens"),
        "digit_tokens": int(sums.get("digit_tokens", 0)),
        "digit_loss": ratio("digit_loss_sum", "digit_tokens"),
        "digit_top1": ratio("digit_top1", "digit_tokens"),
        "leading_digit_top1": ratio("leading_top1", "leading_digits"),
        "box_start_digits": int(sums.get("box_starts", 0)),
        "box_start_top1": ratio("box_start_top1", "box_starts"),
    }


@torch.no_grad()
def answer_losses(
    model: Any, processor: Any, records: Sequence[Mapping[str, Any]], turns: Sequence[Any],
    resolver: Any, *, progress: bool = True,
) -> dict[str, dict[str, float | int | None]]:
    """Per task, :func:`summarise` of the teacher-forced loss on each turn's reference answer."""
    from tqdm import tqdm

    from earthgpt.eval.predictor import read_rgb

    digits = digit_token_ids(processor.tokenizer)
    brackets = bracket_token_ids(processor.tokenizer)
    sums: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    image_cache: dict[int, torch.Tensor] = {}
    for ref in tqdm(turns, desc="scoring", unit="turn", disable=not progress):
        record = records[ref.record]
        if ref.record not in image_cache:
            image_cache.clear()  # turns come in record order: one image at a time
            pixels = processor.preprocess_image(read_rgb(resolver(record), record.get("sensor")))
            image_cache[ref.record] = model.encode_images(pixels[None].to(model.device))
        features = image_cache[ref.record]
        conversation = processor.new_conversation()
        conversation.add_human(ref.question).add_assistant(ref.answer)
        encoded = processor.tokenize(conversation, for_training=True)
        input_ids = torch.tensor([encoded["input_ids"]], device=model.device)
        labels = torch.tensor([encoded["labels"]], device=model.device)
        out = model(input_ids, image_features=features, labels=labels, answer_logits_only=True)
        targets = labels[0, 1:][labels[0, 1:] != IGNORE_INDEX]
        stats = turn_statistics(out.logits, targets.cpu(), digits, brackets)
        task_sums = sums.setdefault(ref.task, {})
        for key, value in stats.items():
            task_sums[key] = task_sums.get(key, 0.0) + value
        counts[ref.task] = counts.get(ref.task, 0) + 1
    return {task: summarise(sums[task], counts[task]) for task in sums}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.answer_loss", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="preset name or checkpoint folder")
    parser.add_argument("--data", type=Path, required=True, help="MMRS records: a .jsonl file or a folder")
    parser.add_argument("--split", default="val", help="split of the records (default val)")
    parser.add_argument("--tasks", nargs="+", help="only these tasks (default: every task)")
    parser.add_argument("--limit", type=int, help="at most N turns per task, as earthgpt eval picks them")
    parser.add_argument("--out", type=Path, help="JSON file to write (default: print only)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from earthgpt.data.image_resolver import ImageResolver
    from earthgpt.data.mmrs_reader import read_records, records_folder
    from earthgpt.eval.inputs import EvalError
    from earthgpt.eval.runner import select_turns
    from earthgpt.inference import load_model

    try:
        records = read_records(args.data, split=args.split)
        turns = select_turns(records, tasks=args.tasks, limit=args.limit)
    except (EvalError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not turns:
        wanted = args.tasks or "any"
        print(f"error: no turns of tasks {wanted} in {args.data} ({args.split})", file=sys.stderr)
        return 2
    try:
        model, processor = load_model(args.model)
    except (OSError, ValueError) as error:
        print(f"error: cannot load model {args.model!r}: {error}", file=sys.stderr)
        return 2
    resolver = ImageResolver([records_folder(args.data)], {})
    report = {
        "model": str(args.model), "data": str(args.data), "split": args.split, "limit": args.limit,
        "tasks": answer_losses(model, processor, records, turns, resolver, progress=not args.no_progress),
    }
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
