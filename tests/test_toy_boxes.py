"""``python -m train.toy_boxes``: the generated one-rectangle grounding set."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from earthgpt.geometry import grid_to_pixel
from earthgpt.textbox import parse_box
from train.toy_boxes import COLOURS, main


def test_each_answer_is_the_box_of_the_one_rectangle_and_the_set_is_deterministic(tmp_path) -> None:
    assert main(["--out", str(tmp_path / "a"), "--train", "6", "--val", "3", "--seed", "5"]) == 0
    assert main(["--out", str(tmp_path / "b"), "--train", "6", "--val", "3", "--seed", "5"]) == 0
    for split, count in (("train", 6), ("val", 3)):
        text = (tmp_path / "a" / f"{split}.jsonl").read_text()
        assert text == (tmp_path / "b" / f"{split}.jsonl").read_text()
        records = [json.loads(line) for line in text.splitlines()]
        assert len(records) == count and {r["split"] for r in records} == {split}
        for record in records:
            human, answer = record["conversations"]
            colour = record["annotations"]["objects_hbb"][0]["label"].split()[0]
            assert f"the {colour} rectangle" in human["value"] and human["value"].startswith("<image>\n")
            x1, y1, x2, y2 = record["annotations"]["objects_hbb"][0]["xyxy_px"]
            pixels = np.asarray(Image.open(tmp_path / "a" / record["image"]))
            assert pixels.shape == (224, 224, 3)
            assert (pixels[y1:y2, x1:x2] == COLOURS[colour]).all()  # the rectangle fills its box
            outside = np.ones(pixels.shape[:2], bool)
            outside[y1:y2, x1:x2] = False
            assert not (pixels[outside] == COLOURS[colour]).all(axis=-1).any()  # and nothing else
            box = grid_to_pixel(parse_box(answer["value"]), 224, 224)
            assert np.allclose([box.x1, box.y1, box.x2, box.y2], [x1, y1, x2, y2], atol=0.112 + 1e-9)


def test_sizes_set_the_rectangles_sides_and_the_default_set_is_unchanged(tmp_path) -> None:
    assert main(["--out", str(tmp_path / "small"), "--train", "20", "--val", "0", "--sizes", "4", "12"]) == 0
    records = [json.loads(line) for line in (tmp_path / "small" / "train.jsonl").read_text().splitlines()]
    boxes = [r["annotations"]["objects_hbb"][0]["xyxy_px"] for r in records]
    sides = [(b[2] - b[0], b[3] - b[1]) for b in boxes]
    assert all(4 <= w <= 12 and 4 <= h <= 12 for w, h in sides) and len(set(sides)) > 5
    assert main(["--out", str(tmp_path / "a"), "--train", "3", "--val", "0"]) == 0
    assert main(["--out", str(tmp_path / "b"), "--train", "3", "--val", "0", "--sizes", "16", "96"]) == 0
    assert (tmp_path / "a" / "train.jsonl").read_text() == (tmp_path / "b" / "train.jsonl").read_text()
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "c"), "--sizes", "12", "4"])
