"""``python -m train.chips``: chips of labelled images, boxes clipped into each chip's pixels."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from earthgpt.geometry import HBB, pixel_to_grid
from earthgpt.textbox import format_grounding
from train.chips import chip_objects, main, offsets


def test_offsets_cover_the_side_evenly_with_the_last_chip_flush():
    assert offsets(640, 320) == [0, 320]
    assert offsets(512, 320) == [0, 192]  # two chips overlapping by 128 rows
    assert offsets(320, 320) == [0] and offsets(200, 320) == [0]
    starts = offsets(1000, 320)
    assert starts == [0, 227, 453, 680] and starts[-1] + 320 == 1000


def test_a_chip_keeps_objects_at_least_half_inside_clipped_to_it():
    objects = [
        {"label": "car", "xyxy_px": [330, 10, 350, 30], "difficult": False},  # inside the chip at x=320
        {"label": "car", "xyxy_px": [310, 40, 330, 60], "difficult": False},  # half inside: kept, clipped
        {"label": "person", "xyxy_px": [300, 70, 325, 80], "difficult": False},  # a fifth inside: left out
        {"label": "person", "xyxy_px": [10, 10, 20, 20], "difficult": False},  # in the other chip
    ]
    kept = chip_objects(objects, 320, 0, 320, 320)
    assert [(o["label"], o["xyxy_px"]) for o in kept] == [("car", [10, 10, 30, 30]), ("car", [0, 40, 10, 60])]


def test_chips_of_a_labelled_image_land_on_its_pixels(tmp_path):
    """A 640 × 512 image with a white 40 × 30 car at (400, 300): its chips are written as images and
    records; in the chip that holds it, the grounding answer is the car's box in that chip's grid,
    and the chip's pixels under that box are the car."""
    data = tmp_path / "mmrs"
    (data / "images").mkdir(parents=True)
    pixels = np.full((512, 640, 3), 20, np.uint8)
    pixels[300:330, 400:440] = 255
    Image.fromarray(pixels).save(data / "images" / "frame.png")
    record = {
        "id": "demo/frame", "image_root": "demo", "image": "images/frame.png", "width": 640, "height": 512,
        "sensor": "infrared", "dataset": "demo", "licence": "test", "split": "val",
        "tasks": ["detection_hbb"],
        "annotations": {"objects_hbb": [{"label": "car", "xyxy_px": [400, 300, 440, 330],
                                         "difficult": False}]},
        "conversations": [{"from": "human", "value": "<image>\nq", "task": "detection_hbb"},
                          {"from": "assistant", "value": "car [625, 586, 688, 645]",
                           "task": "detection_hbb"}],
    }  # fmt: skip
    (data / "val.jsonl").write_text(json.dumps(record) + "\n")
    out = tmp_path / "chips"
    assert main(["--data", str(data), "--out", str(out), "--size", "320"]) == 0
    rows = [json.loads(line) for line in (out / "val.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == [f"demo/frame/chip_{x}_{y}" for x in (0, 320) for y in (0, 192)]
    holder = next(r for r in rows if r["id"].endswith("chip_320_192"))
    assert holder["annotations"]["objects_hbb"][0]["xyxy_px"] == [80, 108, 120, 138]
    answers = {t["task"]: t["value"] for t in holder["conversations"] if t["from"] == "assistant"}
    assert answers["grounding"] == format_grounding(pixel_to_grid(HBB(80, 108, 120, 138), 320, 320))
    chip = np.asarray(Image.open(out / holder["image"]))
    assert chip.shape == (320, 320, 3)
    assert (chip[108:138, 80:120] == 255).all() and (chip[:100] == 20).all()
    empty = next(r for r in rows if r["id"].endswith("chip_0_0"))
    assert empty["annotations"]["objects_hbb"] == [] and "detection_hbb" not in empty["tasks"]


def test_train_per_image_keeps_chips_with_objects_first(tmp_path):
    data = tmp_path / "mmrs"
    (data / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((512, 640, 3), np.uint8)).save(data / "images" / "f.png")
    record = {
        "id": "demo/f", "image_root": "demo", "image": "images/f.png", "width": 640, "height": 512,
        "sensor": "optical", "dataset": "demo", "licence": "test", "split": "train", "tasks": [],
        "annotations": {"objects_hbb": [{"label": "ship", "xyxy_px": [10, 400, 30, 420],
                                         "difficult": False}]},
        "conversations": [{"from": "human", "value": "<image>\nq", "task": "detection_hbb"},
                          {"from": "assistant", "value": "a", "task": "detection_hbb"}],
    }  # fmt: skip
    (data / "train.jsonl").write_text(json.dumps(record) + "\n")
    assert main(["--data", str(data), "--out", str(tmp_path / "c"), "--train-per-image", "1"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "c" / "train.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["demo/f/chip_0_192"]
    assert len(list((tmp_path / "c" / "images").iterdir())) == 1


def test_a_set_without_boxes_is_a_clear_error(tmp_path, capsys):
    data = tmp_path / "mmrs"
    data.mkdir()
    record = {"id": "aid/x", "image": "x.jpg", "width": 10, "height": 10, "split": "val", "dataset": "aid",
              "annotations": {"class": "farmland"},
              "conversations": [{"from": "human", "value": "<image>\nq"},
                                {"from": "assistant", "value": "a"}]}  # fmt: skip
    (data / "val.jsonl").write_text(json.dumps(record) + "\n")
    assert main(["--data", str(data), "--out", str(tmp_path / "c")]) == 2
    assert "no record with horizontal boxes" in capsys.readouterr().err


def test_one_object_chips_hold_one_whole_object_on_its_pixels(tmp_path):
    """Three white objects in a 640 × 512 frame: two cars 30 px apart, which no 160-px chip can
    hold alone, and a person far from both. Only the person gets a chip; the chip holds it whole,
    its grounding answer is its box in the chip's grid, and those pixels are the person."""
    data = tmp_path / "mmrs"
    (data / "images").mkdir(parents=True)
    pixels = np.full((512, 640, 3), 20, np.uint8)
    boxes = {"car": [[40, 40, 80, 60], [110, 40, 150, 60]], "person": [[500, 400, 510, 420]]}
    objects = []
    for label, items in boxes.items():
        for x1, y1, x2, y2 in items:
            pixels[y1:y2, x1:x2] = 255
            objects.append({"label": label, "xyxy_px": [x1, y1, x2, y2], "difficult": False})
    Image.fromarray(pixels).save(data / "images" / "frame.png")
    record = {
        "id": "demo/frame", "image_root": "demo", "image": "images/frame.png", "width": 640, "height": 512,
        "sensor": "infrared", "dataset": "demo", "licence": "test", "split": "val",
        "tasks": ["detection_hbb"], "annotations": {"objects_hbb": objects},
        "conversations": [{"from": "human", "value": "<image>\nq", "task": "detection_hbb"},
                          {"from": "assistant", "value": "a", "task": "detection_hbb"}],
    }  # fmt: skip
    (data / "val.jsonl").write_text(json.dumps(record) + "\n")
    out = tmp_path / "chips"
    assert main(["--data", str(data), "--out", str(out), "--size", "160", "--one-object"]) == 0
    rows = [json.loads(line) for line in (out / "val.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["demo/frame/object_2"]
    (person,) = rows[0]["annotations"]["objects_hbb"]
    x1, y1, x2, y2 = person["xyxy_px"]
    assert (x2 - x1, y2 - y1) == (10, 20)
    assert min(x1, y1) >= 0 and max(x2, y2) <= 160
    answers = {t["task"]: t["value"] for t in rows[0]["conversations"] if t["from"] == "assistant"}
    assert answers["grounding"] == format_grounding(pixel_to_grid(HBB(x1, y1, x2, y2), 160, 160))
    chip = np.asarray(Image.open(out / rows[0]["image"]))
    assert chip.shape == (160, 160, 3)
    assert (chip[y1:y2, x1:x2] == 255).all() and (chip == 255).sum() == 10 * 20 * 3
    # the spot is drawn from a hash of the id: the same input gives the same chip
    assert main(["--data", str(data), "--out", str(tmp_path / "again"), "--size", "160", "--one-object"]) == 0
    assert json.loads((tmp_path / "again" / "val.jsonl").read_text())["annotations"] == rows[0]["annotations"]
