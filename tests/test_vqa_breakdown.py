"""``python -m train.vqa_breakdown``: VQA per dataset and question type, beside two blind priors."""

from __future__ import annotations

import json
from pathlib import Path

from train.vqa_breakdown import main


def _record(rid: str, split: str, dataset: str, pairs: list[tuple[str, str, str]]) -> dict:
    conversations = []
    for question, qtype, answer in pairs:
        conversations += [
            {"from": "human", "value": question, "task": "vqa", "question_type": qtype},
            {"from": "assistant", "value": answer, "task": "vqa"},
        ]
    conversations[0]["value"] = "<image>\n" + conversations[0]["value"]
    return {"id": rid, "image": f"{rid}.png", "dataset": dataset, "split": split,
            "conversations": conversations}  # fmt: skip


def _presence(what: str, answer: str) -> tuple[str, str, str]:
    return (f"Is there {what}?", "presence", answer)


def _write(folder: Path) -> Path:
    folder.mkdir()
    train = [
        _record("lr/t1", "train", "lr", [_presence("water", "yes"), _presence("a road", "no")]),
        _record("lr/t2", "train", "lr", [_presence("water", "yes"), _presence("a road", "no")]),
        _record("lr/t3", "train", "lr", [_presence("a farm", "yes"), ("How many?", "count", "3")]),
        _record("hr/t1", "train", "hr", [_presence("water", "no")]),
    ]
    val = [
        _record("lr/v1", "val", "lr", [_presence("water", "yes"), _presence("a road", "yes"),
                                       _presence("a bridge", "yes"), ("How many?", "count", "2")]),
        _record("hr/v1", "val", "hr", [_presence("water", "no")]),
        _record("sar/v1", "val", "sar", [_presence("a ship", "yes")]),
    ]  # fmt: skip
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (folder / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in val))
    answers = {("lr/v1", 0): "Yes.", ("lr/v1", 1): "no", ("lr/v1", 2): "yes", ("hr/v1", 0): "yes"}
    predictions = folder / "model.predictions.jsonl"
    rows = [{"id": i, "turn": t, "task": "vqa", "answer": a} for (i, t), a in answers.items()]
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return predictions


def test_each_dataset_and_type_beside_the_type_and_question_priors(tmp_path: Path, capsys) -> None:
    predictions = _write(tmp_path / "d")
    assert main(["--data", str(tmp_path / "d"), str(predictions)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| dataset | question type | n | model | type prior | question prior |"
    rows = {tuple(cell.strip() for cell in line.split("|")[1:3]): line for line in lines[2:]}
    # lr presence: the model gets water and bridge ("Yes." matches yes); the type prior (yes, 3 of 5
    # train answers) all three; the question prior says no to the road (asked twice in train: no)
    # and falls back to the type prior for the bridge, never asked in train
    assert rows["lr", "presence"] == "| lr | presence | 3 | 0.667 (2) | 1.000 (3) | 0.667 (2) |"
    assert rows["lr", "count"] == "| lr | count | 1 | 0.000 (0) | 0.000 (0) | 0.000 (0) |"
    # the same question in another dataset takes that dataset's answers (hr: no), which the model misses
    assert rows["hr", "presence"] == "| hr | presence | 1 | 0.000 (0) | 1.000 (1) | 1.000 (1) |"
    # a dataset without train VQA: neither prior answers; an unanswered turn counts as wrong
    assert rows["sar", "presence"] == "| sar | presence | 1 | 0.000 (0) | 0.000 (0) | 0.000 (0) |"
    assert lines[-1] == "| **all** |  | 6 | 0.333 (2) | 0.667 (4) | 0.500 (3) |"


def test_a_missing_predictions_file_is_a_clear_error(tmp_path: Path, capsys) -> None:
    _write(tmp_path / "d")
    assert main(["--data", str(tmp_path / "d"), str(tmp_path / "none.predictions.jsonl")]) == 2
    assert "predictions file not found" in capsys.readouterr().err
