"""The training dataset reads turns as evaluation does, and the one collate pads its batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_data_mmrs_reader import CHAT_STYLE, _record
from test_processor import tiny_processor

from earthgpt.conversation import IGNORE_INDEX, Conversation
from earthgpt.data.torch_dataset import MMRSTorchDataset, collate, make_examples
from earthgpt.eval.inputs import all_turns


def test_training_reads_the_turns_evaluation_scores(tmp_path: Path) -> None:
    processor = tiny_processor()
    records = [_record("a", "train", CHAT_STYLE)]
    examples = make_examples(records, processor.tokenizer, num_visual_tokens=4, max_length=4096)
    dataset = MMRSTorchDataset(records, examples, processor, lambda record: tmp_path / record["image"],
                               max_length=4096)
    trained = [(t.role, t.text) for t in dataset.conversation(0).turns]
    scored = [text for t in all_turns(records) for text in (t.question, t.answer)]
    assert trained == list(zip(["human", "assistant"] * 2, scored, strict=True))
    assert scored == ["What is it?", "forest", "And the caption?", "A forest."]


def test_collate_pads_right_and_stacks_what_every_example_has() -> None:
    processor = tiny_processor()
    image = np.full((20, 20, 3), 128, np.uint8)
    short = processor(image, Conversation().add_human("a").add_assistant("b"), for_training=True)
    longer = Conversation().add_human("a much longer question").add_assistant("b")
    long = processor(image, longer, for_training=True)
    batch = collate([short, long], processor.pad_token_id)
    length = long["input_ids"].shape[0]
    pad = length - short["input_ids"].shape[0]
    assert set(batch) == {"input_ids", "labels", "attention_mask", "pixel_values"}
    assert batch["input_ids"].shape == (2, length) and batch["pixel_values"].shape[0] == 2
    assert batch["input_ids"][0, -pad:].eq(processor.pad_token_id).all()
    assert batch["attention_mask"][0].tolist() == [1] * (length - pad) + [0] * pad
    assert batch["labels"][0, -pad:].eq(IGNORE_INDEX).all()
    assert torch.equal(batch["input_ids"][1], long["input_ids"])
    cached = [
        {"input_ids": ex["input_ids"], "labels": ex["labels"], "attention_mask": ex["attention_mask"],
         "vision_features": torch.ones(3, 5), "image_path": name}
        for ex, name in ((short, "a.png"), (long, "b.png"))
    ]
    batch = collate(cached, processor.pad_token_id)
    assert batch["vision_features"].shape == (2, 3, 5) and batch["image_path"] == ["a.png", "b.png"]
    with pytest.raises(ValueError, match="empty batch"):
        collate([], processor.pad_token_id)
    with pytest.raises(ValueError, match="some examples"):
        collate([short, processor(image, Conversation().add_human("q"))], processor.pad_token_id)
    with pytest.raises(ValueError, match="differ in shape"):
        collate([short, {**short, "pixel_values": torch.zeros(3, 2, 2)}], processor.pad_token_id)


def test_pack_by_task_keeps_one_task_per_example_and_repeats_the_named_tasks() -> None:
    from earthgpt.data.torch_dataset import wanted_turns

    processor = tiny_processor()
    records = [_record("a", "train", CHAT_STYLE), _record("b", "train", CHAT_STYLE)]
    tasks = [t.task for t in wanted_turns(records[0])]
    assert len(set(tasks)) == 2  # one classification-style pair and one caption pair
    mixed = make_examples(records, processor.tokenizer, num_visual_tokens=4, max_length=4096)
    assert [e.pairs for e in mixed] == [(0, 1), (0, 1)]
    sizes = {"num_visual_tokens": 4, "max_length": 4096}
    apart = make_examples(records, processor.tokenizer, **sizes, pack_by_task=True)
    assert [(e.record, e.pairs) for e in apart] == [(0, (0,)), (0, (1,)), (1, (0,)), (1, (1,))]
    repeats = {tasks[1]: 3}
    repeated = make_examples(records, processor.tokenizer, **sizes, pack_by_task=True, task_repeats=repeats)
    expected = [(0, (0,)), *[(0, (1,))] * 3, (1, (0,)), *[(1, (1,))] * 3]
    assert [(e.record, e.pairs) for e in repeated] == expected
    with pytest.raises(ValueError, match="needs pack_by_task"):
        make_examples(records, processor.tokenizer, **sizes, task_repeats={"x": 2})
    with pytest.raises(ValueError, match="positive numbers"):
        make_examples(records, processor.tokenizer, **sizes, pack_by_task=True, task_repeats={"x": 0})


def test_fractional_task_weights_keep_that_share_of_the_records_spread_over_the_file() -> None:
    from earthgpt.data.torch_dataset import copies, wanted_turns

    processor = tiny_processor()
    records = [_record(f"r{i}", "train", CHAT_STYLE) for i in range(40)]
    first, second = (t.task for t in wanted_turns(records[0]))
    sizes = {"num_visual_tokens": 4, "max_length": 4096, "pack_by_task": True}
    weighted = make_examples(records, processor.tokenizer, **sizes, task_repeats={first: 0.25, second: 1.5})
    by_task = {first: [], second: []}
    for example in weighted:
        by_task[wanted_turns(records[example.record])[example.pairs[0]].task].append(example.record)
    assert len(by_task[first]) == 10  # a quarter of 40 records, each once
    assert len(set(by_task[first])) == 10
    assert min(by_task[first]) < 10 and max(by_task[first]) >= 30  # spread, not the first ten
    assert len(by_task[second]) == 60  # every record once, half of them twice
    assert sorted(set(by_task[second])) == list(range(40))
    assert [copies(2, r) for r in range(5)] == [2] * 5
    for bad in (-1, True, "2"):
        with pytest.raises(ValueError, match="positive numbers"):
            make_examples(records, processor.tokenizer, **sizes, task_repeats={first: bad})


VQA_STYLE = [
    {"from": "human", "value": "<image>\nHow many cars?", "task": "vqa", "question_type": "count"},
    {"from": "gpt", "value": "3"},
    {"from": "human", "value": "Is there a person?", "task": "vqa", "question_type": "presence"},
    {"from": "gpt", "value": "no"},
    {"from": "human", "value": "How many people?", "task": "vqa", "question_type": "count"},
    {"from": "gpt", "value": "0"},
    {"from": "human", "value": "What is it?", "task": "classification"},
    {"from": "gpt", "value": "parking"},
]


def test_a_question_type_key_packs_that_type_apart_and_weights_it_alone() -> None:
    from earthgpt.data.torch_dataset import typed_key, wanted_turns

    processor = tiny_processor()
    records = [_record(f"r{i}", "train", VQA_STYLE) for i in range(4)]
    assert [typed_key(t) for t in wanted_turns(records[0])] == [
        "vqa/count", "vqa/presence", "vqa/count", "classification/"]
    sizes = {"num_visual_tokens": 4, "max_length": 4096, "pack_by_task": True}
    plain = make_examples(records, processor.tokenizer, **sizes, task_repeats={"vqa": 2})
    assert [e.pairs for e in plain if e.record == 0] == [(0, 1, 2), (0, 1, 2), (3,)]
    typed = make_examples(records, processor.tokenizer, **sizes, task_repeats={"vqa": 2, "vqa/count": 3})
    # the count pairs (0 and 2) form their own example, three times; the presence pair keeps vqa's 2
    assert [e.pairs for e in typed if e.record == 0] == [(0, 2)] * 3 + [(1,)] * 2 + [(3,)]
    half = make_examples(records, processor.tokenizer, **sizes, task_repeats={"vqa/count": 0.5})
    counted = [e.record for e in half if e.pairs == (0, 2)]
    assert len(counted) == 2 and len([e for e in half if e.pairs == (1,)]) == 4
    with pytest.raises(ValueError, match=r"'vqa/counts'.*keys there are \['vqa/count', 'vqa/presence'\]"):
        make_examples(records, processor.tokenizer, **sizes, task_repeats={"vqa/counts": 2})


def test_a_dataset_key_weights_one_datasets_turns_apart_from_the_same_task_of_the_others() -> None:
    from earthgpt.data.torch_dataset import describe_mix, mix_summary

    processor = tiny_processor()
    records = [{**_record(f"r{i}", "train", VQA_STYLE), "dataset": "lr" if i < 2 else "hr"} for i in range(4)]
    sizes = {"num_visual_tokens": 4, "max_length": 4096, "pack_by_task": True}
    repeats = {"vqa": 1, "lr:vqa": 3, "lr:vqa/count": 2, "vqa/count": 0.5}
    made = make_examples(records, processor.tokenizer, **sizes, task_repeats=repeats)
    by_record = [[e.pairs for e in made if e.record == r] for r in range(4)]
    # lr: its count pairs take lr:vqa/count (2), its presence pair lr:vqa (3); hr: vqa/count (0.5), vqa (1)
    assert by_record[0] == by_record[1] == [(0, 2)] * 2 + [(1,)] * 3 + [(3,)]
    assert sorted(len([p for p in pairs if p == (0, 2)]) for pairs in by_record[2:]) == [0, 1]
    assert all(pairs.count((1,)) == 1 for pairs in by_record[2:])
    summary = mix_summary(records, made, task_repeats=repeats)
    assert summary["lr:vqa/count"] == (4, 8) and summary["lr:vqa"] == (6, 6)
    assert summary["vqa/count"] == (1, 2) and summary["vqa"] == (2, 2)
    assert "lr:vqa 6 (" in describe_mix(summary, len(made))
    # a record without a dataset takes no dataset key
    with pytest.raises(ValueError, match=r"'lr:vqa', 'lr:vqa/count'.*no record names its dataset"):
        make_examples([_record("x", "train", VQA_STYLE)], processor.tokenizer, **sizes, task_repeats=repeats)
    with pytest.raises(ValueError, match=r"'xx:vqa'.*\['hr:vqa', 'hr:vqa/count', 'hr:vqa/presence', 'lr:"):
        make_examples(records, processor.tokenizer, **sizes, task_repeats={"xx:vqa": 2})
    # a misspelt task names the tasks and datasets there are
    named = r"'lr:vqaa'.*tasks there are \['classification', 'vqa'\] and the datasets \['hr', 'lr'\]"
    with pytest.raises(ValueError, match=named):
        make_examples(records, processor.tokenizer, **sizes, task_repeats={"lr:vqaa": 2})
    # a key that every turn it matches leaves for a more specific one weights nothing: an error
    only_lr = records[:2] + [{**r, "dataset": "lr"} for r in records[2:]]
    with pytest.raises(ValueError, match=r"\['vqa/count'\] weight no turn.*of \['lr:vqa'\]"):
        make_examples(only_lr, processor.tokenizer, **sizes, task_repeats={"vqa/count": 3, "lr:vqa": 8})
    # a dataset name may hold a colon: the task is what follows the last one
    colon = [{**r, "dataset": "rsvqa:lr"} for r in records]
    made = make_examples(colon, processor.tokenizer, **sizes, task_repeats={"rsvqa:lr:vqa": 2})
    # 3 VQA pairs a record, twice
    assert mix_summary(colon, made, task_repeats={"rsvqa:lr:vqa": 2})["rsvqa:lr:vqa"] == (8, 24)


def test_the_mix_summary_counts_examples_and_pairs_per_packing_group() -> None:
    from earthgpt.data.torch_dataset import describe_mix, mix_summary

    processor = tiny_processor()
    records = [_record(f"r{i}", "train", VQA_STYLE) for i in range(4)]
    sizes = {"num_visual_tokens": 4, "max_length": 4096, "pack_by_task": True}
    repeats = {"vqa": 2, "vqa/count": 3}
    typed = make_examples(records, processor.tokenizer, **sizes, task_repeats=repeats)
    summary = mix_summary(records, typed, task_repeats=repeats)
    # per record: the two count pairs ×3, the presence pair ×2, the classification pair once
    assert summary == {"vqa/count": (12, 24), "vqa": (8, 8), "classification": (4, 4)}
    assert describe_mix(summary, len(typed)) == (
        "mix: 24 examples an epoch: vqa/count 12 (50.0 %, 24 pairs), vqa 8 (33.3 %, 8 pairs), "
        "classification 4 (16.7 %, 4 pairs)"
    )
    # without packing by task one example holds every pair, and counts under each of its groups
    mixed = make_examples(records, processor.tokenizer, num_visual_tokens=4, max_length=4096)
    assert mix_summary(records, mixed) == {"classification": (4, 4), "vqa": (4, 12)}
    assert describe_mix({}, 0) == "mix: no examples"
