"""Each MMRS converter on the real data in ../shared/data, with values checked by hand in the files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from earthgpt.data import coco, dior_rsvg, dota, folder_per_class, karpathy, rsvqa, voc
from earthgpt.data.records import Sample, SkipLog
from earthgpt.data.sources import Source
from earthgpt.data.turns import native_turns
from earthgpt.geometry import HBB, obb_from_polygon8, pixel_to_grid
from earthgpt.sensors import Sensor
from earthgpt.tasks import Task


def _run(convert, kind: str, path: Path, **options: str) -> tuple[dict[str, Sample], SkipLog]:
    log = SkipLog()
    samples = {s.id: s for s in convert(Source(kind, path, options), log)}
    return samples, log


def test_folder_per_class_aid(shared_data: Path) -> None:
    samples, log = _run(folder_per_class.convert, "folder-per-class", shared_data / "aid")
    assert len(samples) == 1800 and log.total_skipped == 0
    classes = Counter(s.annotations["class"] for s in samples.values())
    assert len(classes) == 30 and set(classes.values()) == {60}
    assert {"baseball field", "storage tanks", "railway station", "dense residential"} <= set(classes)
    sample = samples["aid/BaseballField/baseballfield_100"]
    assert (sample.image_root, sample.image) == ("aid", "AID/BaseballField/baseballfield_100.jpg")
    assert (sample.width, sample.height, sample.sensor, sample.dataset) == (150, 150, Sensor.optical, "aid")
    splits = Counter(s.split for s in samples.values())
    assert set(splits) == {"train", "val"} and 300 < splits["val"] < 420  # 80/20 hash split


def test_karpathy_rsicd_dedups_captions_and_keeps_the_split(shared_data: Path) -> None:
    samples, log = _run(karpathy.convert, "karpathy-json", shared_data / "rsicd" / "dataset_rsicd.json")
    assert len(samples) == 12 and log.total_skipped == 0
    airport = samples["rsicd/airport_17"]
    # five raw captions, two distinct: "… in an airport …" ×3 (one with " ."), "… at an airport …" ×2
    assert airport.annotations["captions"] == [
        "two planes are in an airport near a large parking lot.",
        "two planes are at an airport near a large parking lot.",
    ]
    assert airport.split == "train" and airport.image == "RSICD_images/airport_17.jpg"
    assert samples["rsicd/church_56"].split == "test"
    assert samples["rsicd/square_102"].annotations["captions"] == [
        "two buildings and some green trees are in a square."
    ]
    turns = list(native_turns(airport))
    assert [t.task for t in turns] == [Task.caption, Task.caption] and not any(t.generated for t in turns)


def test_rsvqa_lr_and_hr_sample(shared_data: Path) -> None:
    lr, log = _run(rsvqa.convert, "rsvqa", shared_data / "rsvqa_lr")
    assert len(lr) == 50 and log.total_skipped == 0
    assert sum(len(s.annotations["qa"]) for s in lr.values()) == 5005
    first = lr["rsvqa_lr/0"]
    assert first.image == "Images/0.png" and (first.width, first.height) == (256, 256)
    assert first.annotations["qa"][0] == {
        "question": "Is it a rural or an urban area?",
        "answer": "rural",
        "type": "rural_urban",
    }
    assert first.annotations["qa"][1] == {
        "question": "Is there a water area?",
        "answer": "yes",
        "type": "presence",
    }
    hr, _ = _run(rsvqa.convert, "rsvqa", shared_data / "rsvqa_hr", images="Images", ext="png")
    types = Counter(qa["type"] for s in hr.values() for qa in s.annotations["qa"])
    assert types == {"comparison": 1642, "count": 1319, "presence": 1314, "area": 726}
    assert hr["rsvqa_hr/0"].annotations["qa"][1] == {
        "question": "How many residential areas are there?",
        "answer": "1",
        "type": "count",
    }
    turn = next(native_turns(hr["rsvqa_hr/0"]))
    assert turn.question_type == "presence" and turn.human.endswith(
        "Answer the question using a single word or phrase."
    )


def test_rsvqa_missing_image_folder_is_a_counted_skip(shared_data: Path) -> None:
    samples, log = _run(rsvqa.convert, "rsvqa", shared_data / "rsvqa_lr", images="Images_LR", ext=".tif")
    assert samples == {} and log.total_skipped == 50


def test_dota_polygons_to_obb_and_hbb(shared_data: Path) -> None:
    samples, log = _run(dota.convert, "dota", shared_data / "dota")
    assert sorted(samples) == ["dota/P0706", "dota/P1888"]
    assert log.total_skipped == 5  # five label files whose image is not in the sample
    p1888 = samples["dota/P1888"]
    assert (p1888.width, p1888.height) == (712, 557)
    # first line of P1888.txt: "674 375 683 375 684 394 675 395 small-vehicle 0"
    assert p1888.annotations["objects_obb"][0] == {
        "label": "small vehicle",
        "corners_px": [674, 375, 683, 375, 684, 394, 675, 395],
        "difficult": False,
    }
    assert p1888.annotations["objects_hbb"][0]["xyxy_px"] == [674, 375, 684, 395]
    grid = pixel_to_grid(obb_from_polygon8([674, 375, 683, 375, 684, 394, 675, 395]), 712, 557)
    assert grid.as_list() == [947, 673, 959, 673, 961, 707, 948, 709]
    detection = next(t for t in native_turns(p1888) if t.task == Task.detection_obb)
    assert detection.assistant.splitlines()[0] == "small vehicle [947, 673, 959, 673, 961, 707, 948, 709]"
    assert len(p1888.annotations["objects_obb"]) == 64  # 66 lines minus the two header lines
    # first object of P0706.txt is "1054 1028 1063 1011 1111 1040 1112 1062 ship 1": difficult kept
    assert samples["dota/P0706"].annotations["objects_obb"][0]["difficult"] is True


def test_hit_uav_voc_hbb_and_rotated(shared_data: Path) -> None:
    common = {"images": "JPEGImages"}
    hbb, log = _run(
        voc.convert_hbb, "voc-hbb", shared_data / "hit_uav", annotations="normal_xml/Annotations", **common
    )
    assert len(hbb) == 2129 and log.total_skipped == 0
    assert Counter(s.split for s in hbb.values()) == {"train": 2029, "val": 100}
    labels = Counter(o["label"] for s in hbb.values() for o in s.annotations["objects_hbb"])
    assert labels == {
        "person": 8928,
        "car": 5501,
        "bicycle": 3866,
        "other vehicle": 108,
    }  # the <name> counts of normal_xml/Annotations/*.xml; its 111 DontCare are left out
    sample = hbb["hit_uav/0_100_30_0_03289"]
    assert sample.sensor == Sensor.infrared and sample.image == "JPEGImages/0_100_30_0_03289.jpg"
    assert sample.annotations["objects_hbb"][0] == {
        "label": "person",
        "xyxy_px": [390, 411, 398, 427],
        "difficult": False,
    }
    assert pixel_to_grid(HBB(390, 411, 398, 427), 640, 512).as_list() == [609, 803, 622, 834]
    obb, _ = _run(
        voc.convert_obb, "voc-obb", shared_data / "hit_uav", annotations="rotate_xml/Annotations", **common
    )
    car = obb["hit_uav/0_100_30_0_03289"].annotations["objects_obb"][2]
    # robndbox cx 38.196 cy 111.9726 w 25.8825 h 17.6744 angle 2.444687 (radians, 140.07°); its
    # enclosing box must be the normal_xml box of the same car, [22, 96, 53, 127]
    xs, ys = car["corners_px"][0::2], car["corners_px"][1::2]
    assert car["label"] == "car"
    assert [min(xs), min(ys), max(xs), max(ys)] == pytest.approx([22, 96, 53, 127], abs=1.0)


def test_ssdd_coco_and_vocobb(shared_data: Path) -> None:
    det, _ = _run(
        coco.convert,
        "coco",
        shared_data / "ssdd",
        annotations="coco/annotations/*.json",
        images="coco/images",
    )
    assert {k: s.split for k, s in det.items()} == {
        "ssdd/000001": "train",
        "ssdd/000006": "train",
        "ssdd/000002": "test",
        "ssdd/000015": "test",
    }
    assert det["ssdd/000001"].sensor == Sensor.sar
    assert det["ssdd/000001"].annotations["objects_hbb"] == [
        {"label": "ship", "xyxy_px": [218.67, 48, 266.67, 146.67], "difficult": False}
    ]
    obb, _ = _run(
        voc.convert_obb,
        "voc-obb",
        shared_data / "ssdd",
        annotations="VOCOBB/Annotations*",
        images="VOCOBB/JPEGImages*",
        dir_splits="01:train,02:test",
    )
    assert {k: s.split for k, s in obb.items()} == {k: s.split for k, s in det.items()}
    # rotated_bndbox corners (215,48) (261,45) (268,143) (223,147): already in the paper's order
    assert obb["ssdd/000001"].annotations["objects_obb"][0]["corners_px"] == [
        215,
        48,
        261,
        45,
        268,
        143,
        223,
        147,
    ]
    assert len(obb["ssdd/000015"].annotations["objects_obb"]) == len(
        det["ssdd/000015"].annotations["objects_hbb"]
    )


def test_dior_rsvg_grounding_both_directions(shared_data: Path) -> None:
    samples, _ = _run(dior_rsvg.convert, "dior-rsvg", shared_data / "dior_rsvg")
    assert list(samples) == ["dior_rsvg/00001/test"]  # object index 0 is the first line of split_test.txt
    sample = samples["dior_rsvg/00001/test"]
    assert sample.annotations["referring"] == [
        {"expression": "A green and brown golf field", "label": "golf field", "xyxy_px": [133, 237, 684, 672]}
    ]
    grounding, region = list(native_turns(sample))
    assert grounding.task == Task.grounding and grounding.assistant == "[166, 296, 855, 840]"
    assert "of a green and brown golf field in" in grounding.human
    assert region.task == Task.region_caption and "[166, 296, 855, 840]" in region.human
    assert region.assistant == "A green and brown golf field."
