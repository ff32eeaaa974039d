"""``python -m train.grounding_centres``: where grounding answers point, and the shifted control."""

from __future__ import annotations

import json
from pathlib import Path

from train.grounding_centres import main

BOXES = [[100, 100, 200, 200], [700, 100, 800, 200], [100, 700, 200, 800], [700, 700, 800, 800]]


def _write(folder: Path, answers: list[str], dialect: str = "earthgpt") -> Path:
    folder.mkdir()
    records = [
        {"id": f"demo/{i}", "image": f"{i}.png", "width": 100, "height": 100, "split": "val",
         "conversations": [{"from": "human", "value": "<image>\nWhat is this?", "task": "classification"},
                           {"from": "assistant", "value": "car", "task": "classification"},
                           {"from": "human", "value": "Output the box of the car.", "task": "grounding"},
                           {"from": "assistant", "value": json.dumps(box), "task": "grounding"}]}
        for i, box in enumerate(BOXES)
    ]  # fmt: skip
    (folder / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    predictions = folder / "p.predictions.jsonl"
    rows = [{"id": f"demo/{i}", "turn": 1, "task": "grounding", "answer": a, "dialect": dialect}
            for i, a in enumerate(answers)]  # fmt: skip
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return predictions


def _report(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_answers_that_read_the_image_beat_every_shift(tmp_path: Path, capsys) -> None:
    answers = ["[110, 100, 210, 200]", "[690, 110, 790, 210]", "[100, 700, 200, 800]", "no box here"]
    predictions = _write(tmp_path / "d", answers)
    assert main(["--data", str(tmp_path / "d"), str(predictions)]) == 0
    report = _report(capsys)
    assert report["turns"] == 3 and report["unusable_answers"] == 1
    assert report["acc@0.5"] == 3 and report["centre_inside"] == 3 and report["x_near"] == 3
    assert report["median_centre_distance_grid"] == 10.0 and report["median_centre_distance_px"] == 2.2
    assert report["shifted_max"]["acc@0.5"] == 0 and report["shifted_max"]["centre_inside"] == 0
    assert report["distinct_answers"] == 3


def test_a_constant_answer_scores_the_same_shifted(tmp_path: Path, capsys) -> None:
    predictions = _write(tmp_path / "d", ["[100, 100, 200, 200]"] * 4)
    assert main(["--data", str(tmp_path / "d"), str(predictions)]) == 0
    report = _report(capsys)
    assert report["acc@0.5"] == 1 and report["distinct_answers"] == 1
    assert report["shifted_mean"]["acc@0.5"] == 1 and report["shifted_max"]["acc@0.5"] == 1


def test_another_dialect_is_refused(tmp_path: Path, capsys) -> None:
    predictions = _write(tmp_path / "d", ["[100, 100, 200, 200]"] * 4, dialect="geochat")
    assert main(["--data", str(tmp_path / "d"), str(predictions)]) == 2
    assert "'geochat' dialect" in capsys.readouterr().err
