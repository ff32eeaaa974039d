"""The prior baseline: exact answers per group, backoff, and its scores through the runner; the CLI."""

from __future__ import annotations

import argparse
import json

import pytest

from earthgpt.commands import baselines as command
from earthgpt.eval.baselines import (
    consensus_caption,
    detection_prior,
    grounding_prior,
    majority_answer,
    mean_box,
    prior_predictions,
    prior_table,
)
from earthgpt.eval.runner import evaluate
from earthgpt.geometry import HBB, OBB


def record(rid: str, split: str, turns: list[tuple], sensor: str = "optical") -> dict:
    """A minimal MMRS record: ``turns`` are ``(task, answer[, question_type])``."""
    conversations = []
    for k, turn in enumerate(turns):
        task, answer = turn[0], turn[1]
        human = {"from": "human", "value": ("<image>\n" if k == 0 else "") + f"q{k}", "task": task}
        if len(turn) > 2:
            human["question_type"] = turn[2]
        conversations += [human, {"from": "assistant", "value": answer, "task": task}]
    return {
        "id": rid, "split": split, "sensor": sensor, "dataset": "toy", "width": 1000, "height": 1000,
        "image_root": "toy", "image": f"{rid}.png", "conversations": conversations,
    }


TRAIN = [
    record("t1", "train", [("classification", "forest"), ("vqa", "yes", "presence"), ("vqa", "2", "count")]),
    record(
        "t2", "train", [("classification", "forest"), ("vqa", "yes", "presence"), ("vqa", "two", "count")]
    ),
    record("t3", "train", [("classification", "river"), ("vqa", "no", "presence"), ("vqa", "3", "count")]),
    record(
        "t4", "train",
        [("vqa", "no", "presence"), ("grounding", "[0, 0, 100, 100]"), ("region_caption", "A car."),
         ("detection_hbb", "car [0, 0, 10, 10]\ncar [10, 10, 30, 30]\nperson [0, 0, 5, 5]")],
        sensor="infrared",
    ),
    record(
        "t5", "train",
        [("vqa", "no", "presence"), ("grounding", "[100, 100, 300, 300]"), ("region_caption", "A car."),
         ("region_caption", "A person.")],
        sensor="infrared",
    ),
]

VAL = [
    record("v1", "val", [("classification", "forest"), ("vqa", "yes", "presence"), ("vqa", "3", "count")]),
    record("v2", "val", [("classification", "river"), ("vqa", "no", "presence")]),
    record(
        "v3", "val",
        [("vqa", "no", "presence"), ("grounding", "[50, 50, 200, 200]"), ("region_caption", "A car."),
         ("detection_hbb", "car [5, 5, 20, 20]")],
        sensor="infrared",
    ),
    record("v4", "val", [("vqa", "yes", "presence"), ("caption", "a sar image of a port")], sensor="sar"),
]


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return prior_predictions(TRAIN, VAL)


def test_prior_answers_each_turn_from_its_group(rows):
    got = {(r["id"], r["turn"]): (r["answer"], r["group"]) for r in rows}
    assert got == {
        ("v1", 0): ("forest", "classification/optical"),  # forest 2 (by key) vs river 1
        ("v1", 1): ("yes", "vqa/optical/presence"),
        ("v1", 2): ("2", "vqa/optical/count"),  # "2" and "two" share the key 2; "2" < "two"
        ("v2", 0): ("forest", "classification/optical"),
        ("v2", 1): ("yes", "vqa/optical/presence"),
        ("v3", 0): ("no", "vqa/infrared/presence"),
        ("v3", 1): ("[50, 50, 200, 200]", "grounding/infrared"),  # the mean training box
        ("v3", 2): ("A car.", "region_caption/infrared"),
        ("v3", 3): ("car [5, 5, 20, 20]", "detection_hbb/infrared"),  # commonest class, mean box
        ("v4", 0): ("no", "vqa/*/presence"),  # no SAR training turns: all sensors, yes 2 / no 3
    }
    # v4's caption turn has no training captions at all: not answered, and the runner counts it
    report = evaluate(VAL, predictions=rows)
    assert report["summary"]["turns_unanswered"] == 1


def test_prior_scores_through_the_runner(rows):
    report = evaluate(VAL, predictions=rows)
    tasks = report["tasks"]
    assert tasks["classification"]["all"]["accuracy"] == pytest.approx(0.5)
    assert tasks["vqa"]["all"]["accuracy"] == pytest.approx(2 / 5)  # right: v1 presence, v3
    assert tasks["vqa"]["all"]["per_type"]["count"]["accuracy"] == 0.0
    assert tasks["grounding"]["all"]["acc@0.5"] == 1.0
    assert tasks["detection_hbb"]["all"]["map"] == pytest.approx(1.0)


def test_prior_table_counts_turns_per_group(rows):
    table = prior_table(rows)
    assert table["classification/optical"] == {"answer": "forest", "turns": 2}
    assert table["vqa/*/presence"] == {"answer": "no", "turns": 1}


def test_tasks_filter_and_no_training_records():
    only = prior_predictions(TRAIN, VAL, tasks=["grounding"])
    assert [(r["id"], r["task"]) for r in only] == [("v3", "grounding")]
    with pytest.raises(ValueError, match="training records"):
        prior_predictions([], VAL)


def test_majority_ties_and_spellings():
    assert majority_answer(["Yes", "yes", "no", "No", "NO"]) == "NO"
    assert majority_answer(["b", "a"]) == "a"  # a tie goes to the smaller key
    assert majority_answer(["Bare Land", "bare land", "bare land", "bareland", "forest"]) == "bare land"
    with pytest.raises(ValueError):
        majority_answer([])


def test_boxes_priors():
    assert mean_box([HBB(0, 0, 10, 10), OBB(((20, 20), (30, 20), (30, 40), (20, 40)))]) == HBB(10, 10, 20, 25)
    assert detection_prior(["ship [0, 0, 8, 8]"], oriented=True) == "ship [0, 0, 8, 0, 8, 8, 0, 8]"
    assert detection_prior(["", "no boxes here"], oriented=False) == ""
    assert grounding_prior(["[0, 0, 10, 10]", "nothing"]) == "[0, 0, 10, 10]"


def test_consensus_caption_is_a_shared_caption():
    sets = [["many trees in a forest"], ["many trees in a forest"], ["a wide river"]]
    assert consensus_caption(sets) == "many trees in a forest"
    # not the most frequent caption but the one whose words most other images share
    sets = [
        ["a red car on a road"], ["a blue boat"], ["a blue boat"], ["a red car"],
        ["a red car on a road near trees"], ["a car on a road"],
    ]
    assert consensus_caption(sets) == "a red car on a road"


def test_cli_writes_report_and_markdown(tmp_path):
    data = tmp_path / "set"
    data.mkdir()
    for split, records in (("train", TRAIN), ("val", VAL)):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    out = tmp_path / "baselines.json"
    assert command.run(parser.parse_args(["--data", str(data), "--out", str(out)])) == 0
    report = json.loads(out.read_text())
    assert report["prior"]["tasks"]["classification"]["all"]["accuracy"] == 0.5
    assert report["summary"]["train_records"] == 5
    markdown = out.with_suffix(".md").read_text()
    assert "| vqa/*/presence | no | 1 |" in markdown
    assert command.run(parser.parse_args(["--data", str(tmp_path / "nothing"), "--out", str(out)])) == 2
