"""A torch ``Dataset`` over MMRS records for training, and the one collate function that batches examples.

A record (one image, many human/assistant turns) becomes one or more training examples
(:class:`TrainingExample`): its turns (:func:`earthgpt.data.mmrs_reader.record_turns`, the rule
evaluation reads them by), kept when their ``task`` is wanted, are packed in order
into examples whose estimated token length fits ``max_length`` (or one pair per example, the
stage-1 caption recipe; or each task's pairs apart, optionally repeated per task for task-balanced
sampling). Every example carries the image in its first human turn.

An item is ``input_ids``, ``labels`` (answers only, see :mod:`earthgpt.conversation`),
``attention_mask`` and either ``pixel_values`` (the image read and preprocessed) or, when the
dataset is given a ``features`` function, ``vision_features`` (cached outputs of the frozen vision
encoders, so no image is decoded). ``image_path`` is always present, for the feature cache.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from earthgpt.conversation import IGNORE_INDEX, Conversation, Turn
from earthgpt.data.mmrs_reader import RecordTurn, record_turns
from earthgpt.processor import EarthGPTProcessor

TURN_OVERHEAD_TOKENS = 8
"""Template tokens a chat turn adds around its text (role headers, end of turn), for length estimates."""


@dataclass(frozen=True)
class TrainingExample:
    """Which turn pairs of which record form one example, and its estimated length in tokens."""

    record: int
    pairs: tuple[int, ...]
    length: int


def wanted_turns(record: Mapping[str, Any], tasks: Sequence[str] = ()) -> list[RecordTurn]:
    """The record's turns in order, only those whose ``task`` is in ``tasks`` when given."""
    return [turn for turn in record_turns(record) if not tasks or turn.task in tasks]


def make_examples(
    records: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    *,
    num_visual_tokens: int,
    max_length: int,
    tasks: Sequence[str] = (),
    one_pair_per_example: bool = False,
    pack_by_task: bool = False,
    task_repeats: Mapping[str, float] | None = None,
) -> list[TrainingExample]:
    """Split records into examples whose estimated length is at most ``max_length`` tokens.

    The estimate is ``num_visual_tokens`` plus the token count of each pair's texts plus
    ``TURN_OVERHEAD_TOKENS`` per turn; a single pair longer than ``max_length`` still forms an
    example (it is truncated when tokenized). Records with no wanted pair give no example.

    ``pack_by_task`` packs each task's pairs of a record apart, so that every example holds one
    task; ``task_repeats`` (which needs it) then weights the tasks (task-balanced sampling): a
    named task's examples are listed ``n`` times per epoch, ``n > 0``. A whole ``n`` repeats each
    example; a fraction keeps that share of the records' examples once more (or at all, below 1),
    the records picked by :func:`copies` (deterministic, spread evenly over the records), so
    ``0.5`` halves a bulky task and ``1.5`` lists half its records twice.

    A key ``task/question_type`` (e.g. ``vqa/count``) weights one question type of a task: that
    type's pairs are packed apart from the task's other pairs and take this weight instead of the
    task's. A key may also name the source dataset (the record's ``dataset``) before a colon,
    ``dataset:task`` or ``dataset:task/question_type`` (e.g. ``rsvqa_lr:vqa/presence``), to weight
    one dataset's turns apart from the same task of the others. A turn takes its most specific key
    (:func:`_group`). A typed or dataset key no turn matches is an error that lists those there are.
    """
    repeats = dict(task_repeats or {})
    if repeats and not pack_by_task:
        raise ValueError("task_repeats needs pack_by_task: an example must hold one task to be repeated")
    bad = {
        task: n
        for task, n in repeats.items()
        if isinstance(n, bool) or not isinstance(n, (int, float)) or not n > 0
    }
    if bad:
        raise ValueError(f"task_repeats must be positive numbers, got {bad}")
    per_record = [wanted_turns(record, tasks) for record in records]
    datasets = [str(record.get("dataset") or "") for record in records]
    _check_typed_keys(repeats, per_record, datasets)
    texts = [text for turns in per_record for turn in turns for text in (turn.question, turn.answer)]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    counts = iter(len(ids) for ids in encoded)
    examples: list[TrainingExample] = []
    for index, turns in enumerate(per_record):
        costs = [next(counts) + next(counts) + 2 * TURN_OVERHEAD_TOKENS for _ in turns]
        groups: dict[str, list[int]] = {}
        for pair_index, turn in enumerate(turns):
            group = _group(turn, repeats, datasets[index]) if pack_by_task else ""
            groups.setdefault(group, []).append(pair_index)
        for group, pairs in groups.items():
            packed = _pack(index, pairs, costs, num_visual_tokens, max_length, one_pair_per_example)
            examples += packed * copies(repeats.get(group, 1), index)
    return examples


def mix_summary(
    records: Sequence[Mapping[str, Any]],
    examples: Sequence[TrainingExample],
    tasks: Sequence[str] = (),
    task_repeats: Mapping[str, float] | None = None,
) -> dict[str, tuple[int, int]]:
    """What an epoch of ``examples`` holds, per packing group (a task, or the most specific of
    ``dataset:task/question_type``, ``dataset:task`` and ``task/question_type`` that ``task_repeats``
    weights): ``(examples, pairs)``, most examples first.

    Weights count examples, not pairs: a question type packed apart forms more, shorter
    examples, so its share of the draws can grow far beyond its weight while every other task's
    shrinks. This is the line a run prints before it trains. An example that holds several groups
    (no ``pack_by_task``) counts under each.
    """
    repeats = dict(task_repeats or {})
    turns = [wanted_turns(record, tasks) for record in records]
    counts: dict[str, list[int]] = {}
    for example in examples:
        dataset = str(records[example.record].get("dataset") or "")
        groups = Counter(_group(turns[example.record][pair], repeats, dataset) for pair in example.pairs)
        for group, pairs in groups.items():
            entry = counts.setdefault(group, [0, 0])
            entry[0] += 1
            entry[1] += pairs
    return {g: (n, pairs) for g, (n, pairs) in sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0]))}


def describe_mix(summary: Mapping[str, tuple[int, int]], total: int) -> str:
    """One line of :func:`mix_summary`: each group's examples, share of the ``total`` and pairs."""
    if not total:
        return "mix: no examples"
    parts = [
        f"{group} {n:,} ({100 * n / total:.1f} %, {pairs:,} pairs)" for group, (n, pairs) in summary.items()
    ]
    return f"mix: {total:,} examples an epoch: " + ", ".join(parts)


def typed_key(turn: RecordTurn) -> str:
    """The ``task/question_type`` key of a turn (``task/`` when it has no question type)."""
    return f"{turn.task}/{turn.question_type or ''}"


def _keys(turn: RecordTurn, dataset: str) -> tuple[str, ...]:
    """The weighting keys a turn can take, most specific first: ``dataset:task/question_type`` and
    ``dataset:task`` (when the record names its dataset), then ``task/question_type``."""
    typed = typed_key(turn)
    own = (f"{dataset}:{typed}", f"{dataset}:{turn.task}") if dataset else ()
    return (*own, typed)


def _group(turn: RecordTurn, repeats: Mapping[str, float], dataset: str = "") -> str:
    """The packing group of a turn: its most specific weighted key (:func:`_keys`), else its task."""
    return next((key for key in _keys(turn, dataset) if key in repeats), str(turn.task))


def _check_typed_keys(
    repeats: Mapping[str, float], per_record: Sequence[Sequence[RecordTurn]], datasets: Sequence[str]
) -> None:
    """Raise when a ``task/question_type`` or ``dataset:task`` key of ``repeats`` weights no turn:
    it matches none, or every turn it matches takes a more specific key (:func:`_keys`)."""
    special = [key for key in repeats if "/" in key or ":" in key]
    if not special:
        return
    pairs = [(turn, dataset) for turns, dataset in zip(per_record, datasets, strict=True) for turn in turns]
    present = {key for turn, dataset in pairs for key in _keys(turn, dataset)}
    missing = [key for key in special if key not in present]
    if not missing:
        taken = {_group(turn, repeats, dataset) for turn, dataset in pairs}
        shadowed = [key for key in special if key not in taken]
        if shadowed:
            raise ValueError(
                f"task_repeats keys {shadowed} weight no turn: every turn they match takes a more "
                "specific key (dataset:task/question_type, then dataset:task, then task/question_type) "
                f"of {sorted(key for key in repeats if key in taken)}"
            )
        return

    def task(key: str) -> str:
        return key.rsplit(":", 1)[-1].split("/", 1)[0]

    there = sorted(
        key
        for key in present
        if not key.endswith("/")
        and any(task(key) == task(m) and (":" in key) == (":" in m) for m in missing)
    )
    if there:
        hint = f"the keys there are {there}"
    else:
        tasks = sorted({str(turn.task) for turn, _ in pairs})
        named = sorted({dataset for dataset in datasets if dataset})
        hint = f"the tasks there are {tasks}" + (
            f" and the datasets {named}"
            if named
            else " and no record names its dataset, so no dataset:task key can match"
        )
    raise ValueError(f"task_repeats keys {missing} match no turn of the data; {hint}")


def copies(weight: float, record: int) -> int:
    """How many times the examples of record number ``record`` are listed for a task of weight
    ``weight``: the whole part, plus one for an evenly spread share of the records equal to the
    fraction (record ``r`` is in it when ``floor((r + 1) f)`` passes ``floor(r f)``, so any run of
    ``n`` records holds ``n f`` of them, give or take one)."""
    whole = int(weight)
    fraction = weight - whole
    return whole + (math.floor((record + 1) * fraction) - math.floor(record * fraction))


def _pack(
    record: int, pairs: list[int], costs: list[int], num_visual_tokens: int, max_length: int, one_pair: bool
) -> list[TrainingExample]:
    examples: list[TrainingExample] = []
    current: list[int] = []
    length = num_visual_tokens
    for pair_index in pairs:
        full = current and (one_pair or length + costs[pair_index] > max_length)
        if full:
            examples.append(TrainingExample(record, tuple(current), length))
            current, length = [], num_visual_tokens
        current.append(pair_index)
        length += costs[pair_index]
    if current:
        examples.append(TrainingExample(record, tuple(current), length))
    return examples


def _read_rgb(path: Path, sensor: str | None) -> Any:
    from earthgpt.raster import model_image

    return model_image(path, sensor)[0]


class MMRSTorchDataset(Dataset):
    """Training examples of MMRS records as tensors (see the module doc for the item keys).

    ``resolve_image(record) -> Path`` finds a record's image file (an
    :class:`earthgpt.data.image_resolver.ImageResolver`, as in evaluation); ``read_image(path, sensor)``
    reads it as uint8 RGB (default: :func:`earthgpt.raster.model_image`, as chat and eval read it);
    ``features(path) -> Tensor`` returns cached vision features instead of reading the image.
    """

    def __init__(
        self,
        records: Sequence[Mapping[str, Any]],
        examples: Sequence[TrainingExample],
        processor: EarthGPTProcessor,
        resolve_image: Callable[[Mapping[str, Any]], Path],
        *,
        max_length: int,
        tasks: Sequence[str] = (),
        system_prompt: str | None = None,
        features: Callable[[Path], torch.Tensor] | None = None,
        read_image: Callable[[Path, str | None], Any] | None = None,
    ) -> None:
        self.records = records
        self.examples = list(examples)
        self.processor = processor
        self.resolve_image = resolve_image
        self.max_length = max_length
        self.tasks = tuple(tasks)
        self.system_prompt = system_prompt
        self.features = features
        self.read_image = read_image or _read_rgb

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def lengths(self) -> list[int]:
        """Estimated token length of every example (for length-grouped batches)."""
        return [example.length for example in self.examples]

    def image_path(self, index: int) -> Path:
        """The image file of example ``index``."""
        return Path(self.resolve_image(self.records[self.examples[index].record]))

    def conversation(self, index: int) -> Conversation:
        """The conversation of example ``index`` (its turn pairs, the image in the first turn)."""
        example = self.examples[index]
        wanted = wanted_turns(self.records[example.record], self.tasks)
        turns: list[Turn] = []
        for pair_index in example.pairs:
            turn = wanted[pair_index]
            turns += [Turn("human", turn.question), Turn("assistant", turn.answer)]
        return Conversation(turns=turns, system=self.system_prompt, image_token=self.processor.image_token)

    def __getitem__(self, index: int) -> dict[str, Any]:
        tokens = self.processor.tokenize(self.conversation(index), for_training=True)
        ids, labels = tokens["input_ids"], tokens["labels"]
        if len(ids) > self.max_length:
            image_id = self.processor.image_token_id
            if image_id in ids[self.max_length :]:
                raise ValueError(
                    f"example {index}: max_length {self.max_length} cuts into the image tokens; "
                    f"it must exceed {self.processor.config.num_visual_tokens} plus the prompt"
                )
            ids, labels = ids[: self.max_length], labels[: self.max_length]
        input_ids = torch.tensor(ids, dtype=torch.long)
        item: dict[str, Any] = {
            "input_ids": input_ids,
            "labels": torch.tensor(labels, dtype=torch.long),
            "attention_mask": torch.ones_like(input_ids),
        }
        path = self.image_path(index)
        item["image_path"] = str(path)
        if self.features is not None:
            item["vision_features"] = self.features(path)
        else:
            record = self.records[self.examples[index].record]
            image = self.read_image(path, record.get("sensor"))
            item["pixel_values"] = self.processor.preprocess_image(image)
        return item


def collate(batch: Sequence[Mapping[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Batch examples (from :class:`MMRSTorchDataset` or :meth:`EarthGPTProcessor.__call__`).

    Right-pads ``input_ids`` (``pad_token_id``), ``labels`` (-100) and ``attention_mask`` (0);
    stacks ``pixel_values`` or ``vision_features``; lists ``image_path``. A key must be in every
    example of the batch or in none.
    """
    if not batch:
        raise ValueError("collate got an empty batch")
    fills = {"input_ids": pad_token_id, "labels": IGNORE_INDEX, "attention_mask": 0}
    out: dict[str, Any] = {}
    for key in (*fills, "pixel_values", "vision_features", "image_path"):
        present = [key in example for example in batch]
        if not any(present):
            continue
        if not all(present):
            raise ValueError(f"{key!r} is in some examples of the batch but not all")
        values = [example[key] for example in batch]
        if key in fills:
            out[key] = pad_sequence(values, batch_first=True, padding_value=fills[key])
        elif key == "image_path":
            out[key] = values
        else:
            shapes = {tuple(value.shape) for value in values}
            if len(shapes) != 1:
                raise ValueError(f"{key} differ in shape within the batch: {sorted(shapes)}")
            out[key] = torch.stack(values)
    return out
