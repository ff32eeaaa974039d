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
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert lines[0] == "| dataset | question type | n | model | type prior | question prior |"
    rows = {tuple(cell.strip() for cell in line.split("|")[1:3]): line for line in lines[2:]}
    # lr presence: the model gets water and bridge ("Yes." matches yes); the type prior (yes, 3 of 5
    # train answers) all three; the question prior says no to the road (asked twice in train: no)
    # and falls back to the type prior for the bridge, never asked in train
    assert rows["lr", "presence"] == "| lr | presence | 3 | 0.667 (2) | 1.000 (3) | 0.667 (2) |"
    # the model did not answer the count turn (a cell it answered nothing of reads –); the priors did
    assert rows["lr", "count"] == "| lr | count | 1 | – | 0.000 (0) | 0.000 (0) |"
    # the same question in another dataset takes that dataset's answers (hr: no), which the model misses
    assert rows["hr", "presence"] == "| hr | presence | 1 | 0.000 (0) | 1.000 (1) | 1.000 (1) |"
    # a dataset without train VQA: neither prior answers
    assert rows["sar", "presence"] == "| sar | presence | 1 | – | – | – |"
    # the total counts every unanswered turn as wrong: one denominator for every column
    assert lines[-1] == "| **all** |  | 6 | 0.333 (2) | 0.667 (4) | 0.500 (3) |"
    # the model's file answers 4 of the 6 turns: said on stderr
    assert err.strip() == (
        "warning: model answers 4 of the 6 VQA turns (the others count as wrong)")


def test_files_sharing_a_name_keep_their_own_columns_and_stray_answers_are_flagged(
    tmp_path: Path, capsys
) -> None:
    predictions = _write(tmp_path / "d")
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    other = tmp_path / "other" / "model.predictions.jsonl"
    other.parent.mkdir()
    extra = {"id": "lr/t1", "turn": 0, "task": "vqa", "answer": "yes"}  # a train turn
    every = [{"id": "lr/v1", "turn": 3, "task": "vqa", "answer": "2"},
             {"id": "sar/v1", "turn": 0, "task": "vqa", "answer": "yes"}]  # fmt: skip
    other.write_text("".join(json.dumps(r) + "\n" for r in [*rows, *every, extra]))
    prior = tmp_path / "type prior.predictions.jsonl"
    prior.write_text(predictions.read_text())
    assert main(["--data", str(tmp_path / "d"), str(predictions), str(other), str(prior)]) == 0
    out, err = capsys.readouterr()
    header = out.splitlines()[0]
    assert header == (f"| dataset | question type | n | {predictions} | {other} | {prior} | type prior "
                      "| question prior |")  # fmt: skip
    assert out.splitlines()[-1].endswith("| 6 | 0.333 (2) | 0.667 (4) | 0.333 (2) | 0.667 (4) | 0.500 (3) |")
    assert f"{other} answers 6 of the 6 VQA turns" in err and "1 turns that are not VQA turns" in err
    assert main(["--data", str(tmp_path / "d"), str(predictions), str(predictions)]) == 2
    assert "named twice" in capsys.readouterr().err


def test_ties_take_the_smaller_answer_and_records_without_a_dataset_or_type_get_a_row(
    tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    train = [_record("t1", "train", "lr", [_presence("water", "yes"), _presence("water", "no")])]
    val = [_record("v1", "val", "lr", [_presence("water", "no")]),
           {**_record("v2", "val", "", [("Is it?", "", "yes")])}]  # fmt: skip
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (folder / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in val))
    predictions = folder / "m.predictions.jsonl"
    predictions.write_text(json.dumps({"id": "v2", "turn": 0, "task": "vqa", "answer": "yes"}) + "\n")
    assert main(["--data", str(folder), str(predictions)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # yes and no tie once each in train: the prior takes the smaller key, "no"
    assert "| lr | presence | 1 | – | 1.000 (1) | 1.000 (1) |" in lines
    assert "| ? |  | 1 | 1.000 (1) | – | – |" in lines


def test_a_missing_predictions_file_is_a_clear_error(tmp_path: Path, capsys) -> None:
    _write(tmp_path / "d")
    assert main(["--data", str(tmp_path / "d"), str(tmp_path / "none.predictions.jsonl")]) == 2
    assert "predictions file not found" in capsys.readouterr().err
