"""``python -m train.objectness_probe``: per-token probes of "an object's centre is in this cell"."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_processor import tiny_processor

from earthgpt.data.image_resolver import ImageResolver
from earthgpt.model.earthgpt import EarthGPT
from train import objectness_probe as probe
from train.toy_boxes import write_toy_set


def test_cell_labels_mark_centres_and_leave_out_cells_a_box_only_touches() -> None:
    # a 4 x 4 grid over 40 x 40 px: cells of 10 px
    labels, touched = probe.cell_labels([{"xyxy_px": [12, 2, 28, 8]}], 40, 40, 4)
    grid = labels.reshape(4, 4)
    assert grid[0].tolist() == [0, -1, 1, 0]  # centre (20, 5) in column 2; column 1 only touched
    assert (grid[1:] == 0).all()
    assert touched.reshape(4, 4)[0].tolist() == [False, True, True, False]
    wide, _ = probe.cell_labels([{"xyxy_px": [0, 0, 40, 20]}], 40, 20, 4)  # cells of 10 x 5 px
    assert wide.reshape(4, 4)[2, 2] == 1 and (wide == 1).sum() == 1 and (wide == 0).sum() == 0


def test_auc_and_average_precision_on_known_rankings() -> None:
    labels = np.array([1, 0, 1, 0])
    assert probe.roc_auc(np.array([0.9, 0.1, 0.8, 0.2]), labels) == 1.0
    assert probe.roc_auc(np.array([0.1, 0.9, 0.2, 0.8]), labels) == 0.0
    assert probe.roc_auc(np.zeros(4), labels) == 0.5  # ties count half
    assert probe.roc_auc(np.array([0.9, 0.7, 0.6, 0.2]), labels) == 0.75  # 3 of 4 pairs in order
    # ranked: 1 (hit), 0.5 (miss), 0.2 (miss), 0.1 (hit): precision 1 and 2/4
    assert probe.average_precision(np.array([0.9, 0.5, 0.1, 0.2]), labels) == pytest.approx(0.75)
    assert np.isnan(probe.roc_auc(np.ones(3), np.ones(3)))


def test_pixel_features_see_a_bright_spot_against_its_surroundings() -> None:
    gray = np.zeros((8, 8), dtype=np.float32)
    gray[4:6, 2:4] = 1.0  # fills cell (2, 1) of a 4 x 4 grid
    features = probe.pixel_features(gray, 4).reshape(4, 4, 8)
    assert features[2, 1, 0] == 1.0 and features[2, 1, 1] == 1.0  # mean, max
    assert features[2, 1, 6] == pytest.approx(1 - 1 / 9)  # mean against the 3 x 3 cells around it
    assert features[0, 3, 6] == 0.0 and features[0, 3, 4] == pytest.approx(-1 / 16)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy")
    write_toy_set(folder, train=30, val=10, seed=1)
    records = [json.loads(line) for split in ("train", "val")
               for line in (folder / f"{split}.jsonl").read_text().splitlines()]
    processor = tiny_processor()
    model = EarthGPT.from_config(processor.config, pretrained=False, seed=0).eval()
    return model, processor, records, ImageResolver([folder])


def test_probes_find_the_rectangles_of_the_toy_set(toy) -> None:
    model, processor, records, resolver = toy
    train = probe.select(records, "train", [], 0)
    val = probe.select(records, "val", ["toy_boxes"], 0)
    assert len(train) == 30 and len(val) == 10
    torch.manual_seed(0)
    report = probe.run(model, processor.preprocess_image, train, val, resolver, tile=0, negatives=6)
    assert report["grid"] == 4 and report["train_tiles"] == 30 and report["val_tiles"] == 10
    assert report["val_positive_cells"] == 10 and report["val_tiles_with_object"] == 10
    assert set(report["kinds"]) == {"vision", "projected", "pixels"}
    assert report["kinds"]["vision"]["features"] == model.vision(torch.zeros(1, 3, 56, 56)).shape[-1]
    pixels = report["kinds"]["pixels"]
    # one bright rectangle on a dark background: the pixel statistics find it
    assert pixels["auc"] > 0.8 and pixels["pointing"] > report["pointing_chance"]
    assert all(0.0 <= r["auc"] <= 1.0 and 0.0 <= r["ap"] <= 1.0 for r in report["kinds"].values())
    assert "| pixels (8) |" in probe.table(report)


def test_tiles_cut_each_image_as_chips_do(toy) -> None:
    model, processor, records, resolver = toy
    train = probe.select(records, "train", [], 12)
    val = probe.select(records, "val", [], 3)
    report = probe.run(model, processor.preprocess_image, train, val, resolver, tile=112, negatives=4,
                       kinds=["pixels"])
    assert report["train_tiles"] == 12 * 4 and report["val_tiles"] == 3 * 4
    assert list(report["kinds"]) == ["pixels"]


def test_the_command_says_what_is_missing(tmp_path, capsys) -> None:
    write_toy_set(tmp_path, train=3, val=0)
    assert probe.main(["--data", str(tmp_path / "train.jsonl"), "--model", "tiny"]) == 2
    assert "need train and val records" in capsys.readouterr().err


def test_asking_about_one_class_leaves_the_other_objects_out() -> None:
    person, car = {"xyxy_px": [0, 0, 10, 10]}, {"xyxy_px": [20, 20, 40, 30]}
    labels, touched = probe.cell_labels([person], 40, 40, 4, others=[car])
    grid = labels.reshape(4, 4)
    assert grid[0, 0] == 1 and (grid == 1).sum() == 1
    assert grid[2, 2] == grid[2, 3] == -1 and touched.sum() == 1  # the car's cells: neither class
    assert (grid == 0).sum() == 16 - 1 - 2
