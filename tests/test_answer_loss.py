"""``python -m train.answer_loss``: the teacher-forced loss of reference answers, digits apart."""

from __future__ import annotations

import json
import math

import pytest
import torch
from train_helpers import CONFIGS, generated_records, overrides, write_records

from train.__main__ import main as train_main
from train.answer_loss import box_start_mask, main, summarise, turn_statistics


def test_turn_statistics_counts_digits_and_leading_digits() -> None:
    """Targets ``[ , 4, 2, ,, 7]`` with digits 4, 2 and 7: three digit tokens, two of them leading
    (4 starts "42", 7 starts "7"); the logits rank 4 and 2 first but not 7."""
    digits = {4, 2, 7}
    targets = torch.tensor([0, 4, 2, 1, 7])
    logits = torch.full((5, 8), -10.0)
    for row, best in enumerate([0, 4, 2, 3, 6]):
        logits[row, best] = 10.0
    stats = turn_statistics(logits, targets, digits)
    assert stats["tokens"] == 5 and stats["digit_tokens"] == 3 and stats["leading_digits"] == 2
    assert stats["digit_top1"] == 2 and stats["leading_top1"] == 1
    losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    assert stats["loss_sum"] == pytest.approx(float(losses.sum()))
    assert stats["digit_loss_sum"] == pytest.approx(float(losses[[1, 2, 4]].sum()))
    summary = summarise(stats, items=1)
    assert summary["digit_top1"] == round(2 / 3, 4) and summary["leading_digit_top1"] == 0.5
    assert summarise({"tokens": 3.0, "loss_sum": 3.0}, items=1)["digit_loss"] is None  # no digits


def test_box_starts_are_the_leading_digits_of_the_first_two_numbers_in_a_box() -> None:
    """``car [12, 345, 20, 350]`` then ``[7, 8]``, one token per digit: ids 100 ``[``, 101 ``]``,
    102 a comma; the leading digits of 12, 345, 7 and 8 start boxes, those of 20 and 350 do not.
    A number outside brackets is never a box start."""
    opening, closing, comma, car = {100}, {101}, 102, 103
    targets = [car, 100, 1, 2, comma, 3, 4, 5, comma, 2, 0, comma, 3, 5, 0, 101, 100, 7, comma, 8, 101, 9]
    digits = set(range(10))
    is_digit = [t in digits for t in targets]
    leading = [d and (i == 0 or not is_digit[i - 1]) for i, d in enumerate(is_digit)]
    starts = box_start_mask(targets, leading, opening, closing)
    assert [i for i, s in enumerate(starts) if s] == [2, 5, 17, 19]
    logits = torch.zeros(len(targets), 110)
    logits[torch.arange(len(targets)), torch.tensor(targets)] = 5.0
    logits[5] = 0.0
    logits[5, 6] = 5.0  # the y of the first box ranked wrong
    stats = turn_statistics(logits, torch.tensor(targets), digits, (opening, closing))
    assert stats["box_starts"] == 4 and stats["box_start_top1"] == 3
    assert summarise(stats, items=1)["box_start_top1"] == 0.75


def test_cli_scores_the_reference_answers_of_a_trained_export(tmp_path, capsys) -> None:
    """A tiny stage-1 export scored on its own training records: one item per selected turn, finite
    losses, the captions' numbers ("number 3") counted as digits, and the report written."""
    folder = tmp_path / "set"
    records = write_records(folder, generated_records(folder, 4))
    roots = {"images": folder / "images"}
    stage1 = str(CONFIGS / "tiny_stage1.yaml")
    assert train_main([stage1, *overrides(records, roots, tmp_path / "s1", "optim.max_steps=1")]) == 0
    capsys.readouterr()
    out = tmp_path / "loss.json"
    code = main(["--model", str(tmp_path / "s1" / "final"), "--data", str(records), "--split", "train",
                 "--tasks", "caption", "classification", "--limit", "3", "--out", str(out), "--no-progress"])
    assert code == 0
    report = json.loads(out.read_text())
    assert report == json.loads(capsys.readouterr().out)
    tasks = report["tasks"]
    assert set(tasks) == {"caption", "classification"}
    assert tasks["caption"]["items"] == 3 and tasks["classification"]["items"] == 3
    assert tasks["caption"]["digit_tokens"] >= 3
    for summary in tasks.values():
        assert math.isfinite(summary["loss"]) and summary["loss"] > 0


def test_cli_bad_input_exits_2_with_a_message(tmp_path, capsys) -> None:
    folder = tmp_path / "set"
    records = write_records(folder, generated_records(folder, 1))
    assert main(["--model", "nano", "--data", str(records), "--split", "val"]) == 2
    assert "no records with split 'val'" in capsys.readouterr().err
    assert main(["--model", "nano", "--data", str(records), "--split", "train", "--tasks", "grounding"]) == 2
    assert "no turns of tasks ['grounding']" in capsys.readouterr().err
    assert main(["--model", "nano", "--data", str(tmp_path / "missing.jsonl")]) == 2
    assert "error:" in capsys.readouterr().err
    missing = str(tmp_path / "no-model")
    assert main(["--model", missing, "--data", str(records), "--split", "train"]) == 2
    assert f"cannot load model {missing!r}" in capsys.readouterr().err
