"""Small pure helpers of the MMRS builder: class names, caption de-duplication, splits, plurals."""

from __future__ import annotations

import pytest

from earthgpt.data.records import (
    clean_caption,
    hash_split,
    readable_class,
    relative_posix,
    split_from_name,
    unique_captions,
)
from earthgpt.data.templates import article, plural
from earthgpt.data.turns import expression_phrase


@pytest.mark.parametrize(
    ("source", "readable"),
    [
        ("BaseballField", "baseball field"),
        ("baseball_diamond", "baseball diamond"),
        ("small-vehicle", "small vehicle"),
        ("ground-track-field", "ground track field"),
        ("OtherVehicle", "other vehicle"),
        ("StorageTanks", "storage tanks"),
        ("golffield", "golf field"),
        ("tenniscourt", "tennis court"),
        ("Expressway-toll-station", "expressway toll station"),
        ("HerbaceousVegetation", "herbaceous vegetation"),
        ("ship", "ship"),
    ],
)
def test_readable_class(source: str, readable: str) -> None:
    assert readable_class(source) == readable


def test_unique_captions_drops_rsicd_style_repeats() -> None:
    captions = [
        "two planes are in an airport near a large parking lot.",
        "two planes are at an airport near a large parking lot.",
        "Two planes are in an airport near a large parking lot .",
        "  ",
        "two planes are at an airport  near a large parking lot",
    ]
    assert unique_captions(captions) == [
        "two planes are in an airport near a large parking lot.",
        "two planes are at an airport near a large parking lot.",
    ]
    assert clean_caption("a road , and trees .") == "a road, and trees."


def test_hash_split_is_stable_and_near_the_fraction() -> None:
    keys = [f"AID/Class{i % 7}/img_{i}.jpg" for i in range(2000)]
    splits = [hash_split(k) for k in keys]
    assert splits == [hash_split(k) for k in keys]
    assert set(splits) == {"train", "val"}
    assert 0.17 < splits.count("val") / len(splits) < 0.23
    assert (
        hash_split("x", holdout=0.0) == "train"
        and hash_split("x", holdout=1.0, holdout_name="test") == "test"
    )
    with pytest.raises(ValueError, match="holdout"):
        hash_split("x", holdout=1.5)


@pytest.mark.parametrize(
    ("name", "split"),
    [
        ("LR_split_train", "train"),
        ("USGS_split_test_phili", "test_phili"),
        ("instances_val2017", "val"),
        ("captions_train2014", "train"),
        ("test", "test"),
        ("LR_split_sample", None),
        ("trainval", "train"),
    ],
)
def test_split_from_name(name: str, split: str | None) -> None:
    assert split_from_name(name) == split


def test_relative_posix_refuses_paths_outside_the_root(tmp_path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert relative_posix(tmp_path / "a" / "b" / "x.png", tmp_path / "a") == "b/x.png"
    with pytest.raises(ValueError):
        relative_posix(tmp_path / "x.png", tmp_path / "a")


def test_plural_article_and_expression_phrase() -> None:
    assert [plural(n) for n in ("small vehicle", "person", "storage tanks", "ferry", "bus", "harbor")] == [
        "small vehicles",
        "people",
        "storage tanks",
        "ferries",
        "buses",
        "harbors",
    ]
    assert article("airport") == "an" and article("car") == "a"
    assert expression_phrase("A green and brown golf field.") == "a green and brown golf field"
    assert expression_phrase("USA flag") == "USA flag"
