"""The evaluation runner end to end on a tiny MMRS set: perfect answers score 100 %, garbage 0,
other models' dialects go through the same metrics, and bad inputs fail with clear messages."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from earthgpt.data.mmrs_reader import RecordTurn
from earthgpt.data.records import Sample, hbb_entry, obb_entry
from earthgpt.data.turns import conversation, native_turns
from earthgpt.eval.inputs import EvalError, load_predictions, predictions_writer
from earthgpt.eval.runner import evaluate, run_predictions, select_turns
from earthgpt.geometry import HBB, obb_from_cxcywha, pixel_to_grid
from earthgpt.sensors import Sensor


def _record(sample: Sample) -> dict[str, Any]:
    return {
        "id": sample.id,
        "image_root": sample.image_root,
        "image": sample.image,
        "width": sample.width,
        "height": sample.height,
        "sensor": sample.sensor.value,
        "source": sample.dataset,
        "split": sample.split,
        "annotations": sample.annotations,
        "conversations": conversation(list(native_turns(sample))),
    }


def _sample(key: str, sensor: Sensor, dataset: str, annotations: dict[str, Any]) -> Sample:
    return Sample(
        f"{dataset}/{key}", dataset, f"{key}.png", 800, 600, sensor, dataset, "test", "val", annotations
    )


def tiny_set() -> list[dict[str, Any]]:
    """Four records covering every task, two sensors and four sources."""
    cars = [
        hbb_entry("car", HBB(100, 100, 180, 160)),
        hbb_entry("car", HBB(400, 300, 470, 350)),
        hbb_entry("truck", HBB(600, 50, 700, 120)),
        hbb_entry("car", HBB(10, 500, 40, 530), difficult=True),
    ]
    ships = [
        obb_entry("ship", obb_from_cxcywha(300, 300, 120, 40, 30)),
        obb_entry("ship", obb_from_cxcywha(600, 400, 90, 30, -60)),
    ]
    return [
        _record(s)
        for s in (
            _sample(
                "a",
                Sensor.optical,
                "aid",
                {
                    "class": "dense residential",
                    "captions": [
                        "many buildings are densely arranged .",
                        "a dense residential area with many houses .",
                        "lots of houses with grey roofs .",
                    ],
                },
            ),
            _sample(
                "b",
                Sensor.optical,
                "rsvqa",
                {
                    "qa": [
                        {"question": "Is there a road?", "answer": "yes", "type": "presence"},
                        {"question": "How many buildings are there?", "answer": "12", "type": "count"},
                    ],
                    "referring": [{"expression": "The red car on the left", "xyxy_px": [100, 100, 180, 160]}],
                },
            ),
            _sample("c", Sensor.infrared, "hit_uav", {"objects_hbb": cars, "class": "parking lot"}),
            _sample("d", Sensor.sar, "ssdd", {"objects_obb": ships, "captions": ["two ships at sea ."]}),
        )
    ]


def perfect(record: Mapping[str, Any], turns: Sequence[RecordTurn]) -> list[str]:
    return [t.answer for t in turns]


def garbage(record: Mapping[str, Any], turns: Sequence[RecordTurn]) -> list[str]:
    return ["qwerty [oops" for _ in turns]


def test_perfect_answers_score_full_marks() -> None:
    report = evaluate(tiny_set(), perfect)
    tasks = report["tasks"]
    assert set(tasks) == {
        "classification",
        "caption",
        "vqa",
        "detection_hbb",
        "detection_obb",
        "grounding",
        "region_caption",
    }
    assert tasks["classification"]["all"]["accuracy"] == 1.0
    assert tasks["classification"]["by_sensor"]["infrared"]["n"] == 1
    assert tasks["vqa"]["all"]["accuracy"] == 1.0
    assert tasks["vqa"]["all"]["per_type"]["count"] == {"accuracy": 1.0, "n": 1}
    for task in ("caption", "region_caption"):
        assert tasks[task]["all"]["bleu_4"] == pytest.approx(1.0, abs=1e-6)
        assert tasks[task]["all"]["rouge_l"] == pytest.approx(1.0)
    assert tasks["caption"]["all"]["n"] == 2  # one item per record, not per caption turn
    assert tasks["caption"]["all"]["cider"] > 3
    detection = tasks["detection_hbb"]["all"]
    assert detection["map"] == 1.0
    assert detection["per_class"]["car"]["n_gt"] == 2  # the difficult car is no positive
    assert tasks["detection_obb"]["all"]["map"] == 1.0
    assert tasks["grounding"]["all"]["acc@0.5"] == 1.0
    assert tasks["grounding"]["all"]["mean_iou"] == pytest.approx(1.0, abs=0.02)
    assert report["summary"]["turns_unanswered"] == 0


def test_garbage_answers_score_zero_without_crashing() -> None:
    report = evaluate(tiny_set(), garbage)
    tasks = report["tasks"]
    assert tasks["classification"]["all"]["accuracy"] == 0.0
    assert tasks["vqa"]["all"]["accuracy"] == 0.0
    assert tasks["caption"]["all"]["bleu_1"] < 1e-6 and tasks["caption"]["all"]["cider"] == 0.0
    assert tasks["detection_hbb"]["all"]["map"] == 0.0
    assert tasks["detection_hbb"]["parse"] == {"answers": 1, "without_boxes": 1, "skipped_lines": 1,
                                              "invalid_boxes": 0}
    assert tasks["grounding"]["all"] == {"acc@0.5": 0.0, "mean_iou": 0.0, "parsed": 0.0, "n": 1}


def _geochat(box_px: HBB, label: str) -> str:
    grid = pixel_to_grid(box_px, 800, 600)
    low = [grid.x1 // 10, grid.y1 // 10]  # the 0-100 grid, rounded outwards
    high = [-(-grid.x2 // 10), -(-grid.y2 // 10)]
    return f"<p>{label}</p> {{<{low[0]}><{low[1]}><{high[0]}><{high[1]}>|<0>}}"


def test_other_dialects_are_scored_by_the_same_code() -> None:
    records = tiny_set()
    rows = []
    for ref in select_turns(records, tasks=["detection_hbb"]):
        objects = records[ref.record]["annotations"]["objects_hbb"]
        answer = " ".join(_geochat(HBB(*o["xyxy_px"]), o["label"]) for o in objects if not o["difficult"])
        rows.append({"id": ref.record_id, "turn": ref.turn, "answer": answer, "dialect": "geochat"})
    report = evaluate(records, predictions=rows)
    assert report["tasks"]["detection_hbb"]["all"]["map"] == 1.0
    assert report["summary"]["turns_unanswered"] > 0  # the other tasks were not answered


def test_predictions_roundtrip_limit_and_tasks(tmp_path: Path) -> None:
    records = tiny_set()
    rows = run_predictions(records, perfect, progress=False)
    path = tmp_path / "answers.jsonl"
    with predictions_writer(path) as save:
        save(rows)
    loaded = list(load_predictions(path).values())
    assert evaluate(records, predictions=loaded) == evaluate(records, perfect)
    limited = evaluate(records, predictions=loaded, tasks=["vqa", "caption"], limit=1)
    assert set(limited["tasks"]) == {"caption", "vqa"}
    assert limited["tasks"]["vqa"]["all"]["n"] == 1 and limited["tasks"]["caption"]["all"]["n"] == 1


def test_mismatched_ids_and_turns_are_reported() -> None:
    records = tiny_set()
    with pytest.raises(EvalError, match="none of the 1 predictions matches a record id"):
        evaluate(records, predictions=[{"id": "other/x", "turn": 0, "answer": "a"}])
    with pytest.raises(EvalError, match="id 'aid/a' turn 9"):
        evaluate(records, predictions=[{"id": "aid/a", "turn": 9, "answer": "a"}])
    with pytest.raises(EvalError, match="repeats id"):
        evaluate(records, predictions=[{"id": "aid/a", "turn": 0, "answer": "a"}] * 2)
    with pytest.raises(EvalError, match="needs 'id', 'turn' and 'answer'"):
        evaluate(records, predictions=[{"id": "aid/a", "answer": "a"}])
    with pytest.raises(EvalError, match="exactly one of"):
        evaluate(records)
    with pytest.raises(EvalError, match="unknown task"):
        evaluate(records, perfect, tasks=["segmentation"])


def test_report_is_json_ready(tmp_path: Path) -> None:
    from earthgpt.eval.report import json_ready, markdown_summary, write_json

    report = evaluate(tiny_set(), garbage)
    report["tasks"]["vqa"]["all"]["average_accuracy"] = math.nan
    write_json(report, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["tasks"]["vqa"]["all"]["average_accuracy"] is None
    assert json_ready({"x": (1.0, math.inf)}) == {"x": [1.0, None]}
    text = markdown_summary(report)
    assert "## detection_obb" in text and "| map | 0.0000 | 1 | sar | all |" in text
    assert markdown_summary(report) == text


def test_limit_spreads_over_the_task_in_record_order() -> None:
    records = tiny_set() * 3  # the same records thrice: 3x the turns of each task
    every = [ref for ref in select_turns(records) if ref.task == "vqa"]
    assert len(every) >= 4
    two = select_turns(records, tasks=["vqa"], limit=2)
    assert two == [every[0], every[len(every) // 2]]  # floor(i * n / limit), not the first two
    assert select_turns(records, tasks=["vqa"], limit=len(every) + 5) == every


def test_a_record_that_fails_is_reported_not_fatal() -> None:
    from earthgpt.raster import RasterError

    records = tiny_set()

    def flaky(record, turns):
        if record["id"] == records[0]["id"]:
            raise RasterError("corrupt JPEG")
        return perfect(record, turns)

    report = evaluate(records, flaky)
    (error,) = report["summary"]["errors"]
    assert error["id"] == records[0]["id"] and error["error"] == "RasterError: corrupt JPEG"
    assert report["summary"]["turns_unanswered"] == len(error["turns"])
    assert evaluate(records, perfect)["summary"]["errors"] == []
    with pytest.raises(RasterError):
        run_predictions(records, flaky, progress=False)  # without an errors list it propagates


def test_unusable_predicted_boxes_count_as_misses() -> None:
    from earthgpt.eval.scoring import reference_objects
    from earthgpt.textbox import parse_box

    def answers(record: Mapping[str, Any], turns: Sequence[RecordTurn]) -> list[str]:
        out = []
        for turn in turns:
            answer = turn.answer
            if turn.task == "detection_hbb":  # the first car with its corners swapped, and a zero-area car
                first, *rest = answer.splitlines()
                box = parse_box(first)
                swapped = f"car [{box.x2}, {box.y1}, {box.x1}, {box.y2}]"
                answer = "\n".join([swapped, *rest, "car [161, 161, 161, 161]"])
            elif turn.task == "grounding":
                answer = "[161, 161, 161, 161] " + answer  # the first box is the answer
            out.append(answer)
        return out

    tasks = evaluate(tiny_set(), answers)["tasks"]
    detection = tasks["detection_hbb"]
    car = detection["all"]["per_class"]["car"]
    # 4 car predictions: 1 hit, 1 on the difficult car (ignored), 2 misses; the swapped one was a
    # hit when corners were silently sorted
    assert car["n_pred"] == 4 and car["recall"] == 0.5 and car["precision"] == pytest.approx(1 / 3)
    assert detection["parse"]["invalid_boxes"] == 2 and detection["parse"]["without_boxes"] == 0
    assert tasks["grounding"]["all"]["acc@0.5"] == 0.0 and tasks["grounding"]["all"]["parsed"] == 1.0
    truths = reference_objects("detection_hbb", "car [100, 100, 100, 100]\nship [1, 2, 3, 4]",
                               {"width": 1000, "height": 1000})
    assert [t.label for t in truths] == ["car", "ship"]  # ground truth is read as written
