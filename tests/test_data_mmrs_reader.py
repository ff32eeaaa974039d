"""The one MMRS reader and image resolver: split selection, the role rule, the resolver's search
order and error, and a record that ``earthgpt eval`` finds being found by training too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from test_eval_cli import _fake_inference

from earthgpt.cli import main
from earthgpt.data.image_resolver import ImageResolver
from earthgpt.data.mmrs_reader import DataError, RecordTurn, human_turn_count, read_records, record_turns
from train.data import load_records


def _record(rid: str, split: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": rid, "image_root": "AID", "image": f"{rid}.png", "sensor": "optical", "split": split,
            "conversations": messages}


CHAT_STYLE = [
    {"role": "user", "content": "<image>\nWhat is it?", "task": "classification"},
    {"role": "model", "content": "forest"},
    {"from": "system", "value": "ignored"},
    {"from": "human", "value": "And the caption?"},
    {"from": "gpt", "value": "A forest.", "task": "caption", "generated": True},
    {"from": "human", "value": "Unanswered."},
]


def _write(folder: Path, name: str, records: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_split_selection_and_errors(tmp_path: Path) -> None:
    stray = _record("e", "val", CHAT_STYLE)  # a val record in train.jsonl
    _write(tmp_path / "set", "train.jsonl", [_record("a", "train", CHAT_STYLE), stray])
    _write(tmp_path / "set", "val.jsonl", [_record("b", "val", CHAT_STYLE)])
    assert [r["id"] for r in read_records(tmp_path / "set", "val")] == ["b"]  # val.jsonl only
    assert [r["id"] for r in read_records(tmp_path / "set")] == ["a", "e", "b"]
    _write(tmp_path / "mixed" / "part", "all.jsonl", [_record("d", "test", CHAT_STYLE)])
    assert [r["id"] for r in read_records(tmp_path / "mixed", "test")] == ["d"]  # filtered, any depth
    with pytest.raises(DataError, match="no records with split 'test'"):
        read_records(tmp_path / "set", "test")
    with pytest.raises(DataError, match="MMRS data not found"):
        read_records(tmp_path / "nowhere")
    bad = _write(tmp_path, "bad.jsonl", [{"conversations": []}])
    with pytest.raises(DataError, match="needs 'id' and a 'conversations' list"):
        read_records(bad)


def test_one_role_rule_for_every_message_style() -> None:
    turns = record_turns(_record("a", "val", CHAT_STYLE), index=3)
    assert turns == [
        RecordTurn(3, "a", 0, "classification", "What is it?", "forest"),
        RecordTurn(3, "a", 1, "caption", "And the caption?", "A forest.", generated=True),
    ]
    assert human_turn_count(_record("a", "val", CHAT_STYLE)) == 3


def test_resolver_names_every_path_tried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EARTHGPT_DATA", str(tmp_path / "shared"))
    record = _record("r", "val", CHAT_STYLE)
    resolver = ImageResolver([tmp_path / "set"], {"AID": tmp_path / "aid"})
    tried = [tmp_path / "aid" / "r.png", tmp_path / "set" / "r.png", tmp_path / "set" / "AID" / "r.png",
             tmp_path / "shared" / "AID" / "r.png"]
    assert resolver.candidates(record) == tried
    with pytest.raises(FileNotFoundError) as error:
        resolver(record)
    assert str(error.value) == (
        f"image of record 'r' not found; tried {', '.join(map(str, tried))}; map image root 'AID' to a "
        "folder (--image-root NAME=DIR, data.image_roots) or set EARTHGPT_DATA to the folder that holds it")
    monkeypatch.delenv("EARTHGPT_DATA")
    with pytest.raises(FileNotFoundError, match="no folder to look in: map image root 'AID' to a folder"):
        ImageResolver()(record)
    # the folder `earthgpt mmrs build` recorded beside the set (review of 2026-12-04: eval and
    # training found no image of a set built as the README says, without EARTHGPT_DATA)
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "image_roots.json").write_text('{"AID": "../datasets/aid"}')
    (tmp_path / "datasets" / "aid").mkdir(parents=True)
    (tmp_path / "datasets" / "aid" / "r.png").write_bytes(b"png")
    assert resolver(record) == tmp_path / "set" / ".." / "datasets" / "aid" / "r.png"
    with pytest.raises(DataError, match="has no 'image' path"):
        resolver({"id": "x"})


def test_a_record_eval_finds_is_found_by_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EARTHGPT_DATA", raising=False)
    data = tmp_path / "set"
    _write(data, "val.jsonl", [_record("a", "val", CHAT_STYLE)])
    image = data / "AID" / "a.png"  # beside the records, no --image-root / data.image_roots given
    image.parent.mkdir()
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(image)
    _fake_inference(monkeypatch)
    out = tmp_path / "report.json"
    assert main(["eval", "--data", str(data), "--model", "fake", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads(out.read_text())["summary"]
    assert summary["errors"] == [] and summary["turns_unanswered"] == 0

    records, resolver = load_records([f"mmrs={data}"], "val", {})
    assert resolver(records[0]) == image
