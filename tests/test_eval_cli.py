"""``earthgpt eval`` end to end in predictions mode and (with a stand-in chat session) model mode,
plus the image lookup and reading of the model mode."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_eval_runner import perfect, tiny_set

from earthgpt.cli import main
from earthgpt.data.image_resolver import ImageResolver
from earthgpt.data.mmrs_reader import RecordTurn
from earthgpt.eval.predictor import ChatPredictor, read_rgb
from earthgpt.eval.runner import run_predictions


def _write_set(folder: Path) -> list[dict[str, Any]]:
    records = tiny_set()
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "val.jsonl").open("w") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
    return records


def test_cli_scores_saved_predictions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = _write_set(tmp_path / "mmrs")
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        "".join(json.dumps(r) + "\n" for r in run_predictions(records, perfect, progress=False))
    )
    out = tmp_path / "out" / "report.json"
    status = main(
        ["eval", "--data", str(tmp_path / "mmrs"), "--predictions", str(answers), "--out", str(out)]
    )
    assert status == 0
    report = json.loads(out.read_text())
    assert report["tasks"]["vqa"]["all"]["accuracy"] == 1.0
    assert report["summary"]["split"] == "val" and report["summary"]["records"] == 4
    markdown = out.with_suffix(".md").read_text()
    assert "| accuracy | 1.0000 | 2 | all | all |" in markdown  # two classification records
    assert "## grounding" in capsys.readouterr().out


def test_cli_bad_input_exits_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "r.json")
    assert main(["eval", "--data", str(tmp_path / "nowhere"), "--predictions", "p.jsonl", "--out", out]) == 2
    assert "MMRS data not found" in capsys.readouterr().err
    _write_set(tmp_path / "mmrs")
    data = str(tmp_path / "mmrs")
    assert main(["eval", "--data", data, "--predictions", str(tmp_path / "p.jsonl"), "--out", out]) == 2
    assert "predictions file not found" in capsys.readouterr().err
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"id": "x/1", "turn": 0, "answer": "yes"}\n')
    assert main(["eval", "--data", data, "--predictions", str(wrong), "--out", out]) == 2
    assert "none of the 1 predictions matches a record id" in capsys.readouterr().err
    assert main(["eval", "--data", data, "--split", "test", "--predictions", str(wrong), "--out", out]) == 2
    assert "no records with split 'test'" in capsys.readouterr().err


class FakeSession:
    """Stands in for ChatSession: records what it was shown and answers with the image's mean."""

    def __init__(self, model: Any, processor: Any, sensor: str | None = None) -> None:
        self.sensor = sensor
        self.image: np.ndarray | None = None
        self.finish_reason = "end"

    def set_image(self, rgb: np.ndarray) -> None:
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        self.image = rgb

    def ask(self, text: str, max_new_tokens: int = 256, stop_rule: Any = None) -> str:
        assert "<image>" not in text and self.image is not None
        return f"{self.sensor} {self.image.shape[1]}x{self.image.shape[0]}"


def _write_images(folder: Path, records: Sequence[dict[str, Any]]) -> None:
    from PIL import Image

    for record in records:
        path = folder / record["image_root"] / record["image"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((6, 8, 3), 90, dtype=np.uint8)).save(path)


FAKE_UNTRAINED_WARNING = "untrained start (the stand-in inference module)"


def _fake_inference(monkeypatch: pytest.MonkeyPatch, untrained: bool = False) -> None:
    """Put a stand-in ``earthgpt.inference`` in place (no torch import, no model)."""
    fake = types.ModuleType("earthgpt.inference")
    fake.ChatSession = FakeSession  # type: ignore[attr-defined]
    fake.load_model = lambda name, **kw: ("model", "processor")  # type: ignore[attr-defined]
    fake.is_untrained_start = lambda name: untrained  # type: ignore[attr-defined]
    fake.UNTRAINED_WARNING = FAKE_UNTRAINED_WARNING  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "earthgpt.inference", fake)


def test_cli_model_mode_saves_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = _write_set(tmp_path / "mmrs")
    _write_images(tmp_path / "images", records)
    _fake_inference(monkeypatch)
    roots = []
    for record in records:
        roots += ["--image-root", f"{record['image_root']}={tmp_path / 'images' / record['image_root']}"]
    out = tmp_path / "report.json"
    args = [
        "eval",
        "--data",
        str(tmp_path / "mmrs" / "val.jsonl"),
        "--model",
        "fake",
        "--out",
        str(out),
        "--limit",
        "1",
        "--no-progress",
        *roots,
    ]
    assert main(args) == 0
    saved = [json.loads(line) for line in out.with_name("report.predictions.jsonl").read_text().splitlines()]
    assert {row["task"] for row in saved} == set(json.loads(out.read_text())["tasks"])
    assert len([row for row in saved if row["task"] == "vqa"]) == 1
    assert saved[0]["answer"] == "optical 8x6"


def test_image_resolver_search_order_and_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = {"id": "r/1", "image_root": "AID", "image": "Forest/f_1.png"}
    monkeypatch.setenv("EARTHGPT_DATA", str(tmp_path / "shared"))
    resolver = ImageResolver([tmp_path / "mmrs"])
    assert resolver.candidates(record) == [
        tmp_path / "mmrs" / "Forest/f_1.png",
        tmp_path / "mmrs" / "AID" / "Forest/f_1.png",
        tmp_path / "shared" / "AID" / "Forest/f_1.png",
    ]
    with pytest.raises(FileNotFoundError, match="image of record 'r/1' not found; tried"):
        resolver(record)
    target = tmp_path / "shared" / "AID" / "Forest" / "f_1.png"
    _write_images(tmp_path / "shared", [record])
    assert resolver(record) == target


def test_read_rgb_png_and_geotiff(tmp_path: Path, fixtures_dir: Path) -> None:
    import rasterio

    optical = read_rgb(fixtures_dir / "rotated.tif", "optical")
    assert optical.dtype == np.uint8 and optical.shape == (30, 40, 3)
    sar = tmp_path / "sar.tif"
    values = np.random.default_rng(0).uniform(0.001, 0.5, size=(1, 12, 10)).astype("float32")
    profile = {"driver": "GTiff", "width": 10, "height": 12, "count": 1, "dtype": "float32"}
    transform = rasterio.transform.from_origin(500000, 4000000, 30, 30)
    with rasterio.open(sar, "w", crs="EPSG:32611", transform=transform, **profile) as dst:
        dst.write(values)
    assert read_rgb(sar, "sar").shape == (12, 10, 3)
    _write_images(tmp_path, [{"image_root": "x", "image": "a.png"}])
    assert read_rgb(tmp_path / "x" / "a.png").shape == (6, 8, 3)


def test_chat_predictor_asks_turns_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_inference(monkeypatch)
    _write_images(tmp_path, [{"image_root": "x", "image": "a.png"}])
    predictor = ChatPredictor("model", "processor", ImageResolver([tmp_path / "x"]))
    turns = [RecordTurn(0, "x/a", k, "vqa", f"q{k}", "yes") for k in range(2)]
    record = {"id": "x/a", "image": "a.png", "sensor": "infrared"}
    assert predictor(record, turns) == ["infrared 8x6", "infrared 8x6"]


def test_chat_predictor_decodes_a_task_with_its_stop_rule_and_counts_the_answers_it_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Detection answers get the rule (the real ChatSession's ``stop_rule``), other tasks none."""

    class RuledSession(FakeSession):
        def ask(self, text: str, max_new_tokens: int = 256, stop_rule: Any = None) -> str:
            lines = ["car [1, 1, 5, 5]"] * 3 if "boxes" in text else ["yes"]
            kept: list[str] = []
            self.finish_reason = "end"
            for line in lines:
                if stop_rule is not None and stop_rule([*kept, line]):
                    self.finish_reason = "rule"
                    break
                kept.append(line)
            return "\n".join(kept)

    _fake_inference(monkeypatch)
    monkeypatch.setattr(sys.modules["earthgpt.inference"], "ChatSession", RuledSession)
    from earthgpt.scene_detection import detection_stop_rule

    _write_images(tmp_path, [{"image_root": "x", "image": "a.png"}])
    predictor = ChatPredictor("model", "processor", ImageResolver([tmp_path / "x"]),
                              stop_rules={"detection_hbb": detection_stop_rule()})
    turns = [RecordTurn(0, "x/a", 0, "detection_hbb", "boxes?", ""),
             RecordTurn(0, "x/a", 1, "vqa", "q", "yes")]
    assert predictor({"id": "x/a", "image": "a.png"}, turns) == ["car [1, 1, 5, 5]", "yes"]
    assert predictor.stopped == {"detection_hbb": 1}
    plain = ChatPredictor("model", "processor", ImageResolver([tmp_path / "x"]))
    assert plain({"id": "x/a", "image": "a.png"}, turns)[0].count("car") == 3
    assert plain.stopped == {}


def _model_args(tmp_path: Path, records: Sequence[dict[str, Any]], *extra: str) -> list[str]:
    roots = []
    for record in records:
        roots += ["--image-root", f"{record['image_root']}={tmp_path / 'images' / record['image_root']}"]
    return ["eval", "--data", str(tmp_path / "mmrs" / "val.jsonl"), "--model", "fake",
            "--out", str(tmp_path / "report.json"), "--no-progress", *roots, *extra]


def test_cli_unreadable_image_is_one_unanswered_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    records = _write_set(tmp_path / "mmrs")
    _write_images(tmp_path / "images", records)
    broken = tmp_path / "images" / records[0]["image_root"] / records[0]["image"]
    broken.write_bytes(b"not an image")
    _fake_inference(monkeypatch)
    assert main(_model_args(tmp_path, records)) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    (error,) = report["summary"]["errors"]
    assert error["id"] == records[0]["id"] and "RasterError" in error["error"]
    assert report["summary"]["turns_unanswered"] >= len(error["turns"]) > 0
    saved = (tmp_path / "report.predictions.jsonl").read_text().splitlines()
    ids = {json.loads(line)["id"] for line in saved}
    assert records[0]["id"] not in ids and ids == {r["id"] for r in records[1:]}
    assert "1 records could not be answered" in capsys.readouterr().err


def test_cli_answers_are_saved_as_they_come(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash after the first record leaves that record's answers on disk."""
    records = _write_set(tmp_path / "mmrs")
    _write_images(tmp_path / "images", records)
    _fake_inference(monkeypatch)
    asked: list[str] = []

    def ask(self: FakeSession, text: str, max_new_tokens: int = 256, stop_rule: Any = None) -> str:
        asked.append(text)
        if len({id(s) for s in sessions}) > 1:
            raise KeyboardInterrupt
        return "yes"

    sessions: list[FakeSession] = []
    original = FakeSession.set_image

    def set_image(self: FakeSession, rgb: np.ndarray) -> None:
        sessions.append(self)
        original(self, rgb)

    monkeypatch.setattr(FakeSession, "ask", ask)
    monkeypatch.setattr(FakeSession, "set_image", set_image)
    with pytest.raises(KeyboardInterrupt):
        main(_model_args(tmp_path, records))
    saved = [json.loads(line) for line in (tmp_path / "report.predictions.jsonl").read_text().splitlines()]
    assert saved and {row["id"] for row in saved} == {records[0]["id"]}


def test_cli_model_mode_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    records = _write_set(tmp_path / "mmrs")
    _write_images(tmp_path / "images", records)
    with pytest.raises(SystemExit):
        main(_model_args(tmp_path, records, "--load-4bit", "--load-8bit"))
    capsys.readouterr()
    _fake_inference(monkeypatch, untrained=True)
    assert main(_model_args(tmp_path, records, "--limit", "1")) == 0
    assert f"WARNING: {FAKE_UNTRAINED_WARNING}" in capsys.readouterr().err
    fake = sys.modules["earthgpt.inference"]
    rules: list[Any] = []

    def ask(self: FakeSession, text: str, max_new_tokens: int = 256, stop_rule: Any = None) -> str:
        rules.append(stop_rule)
        return "car [1, 1, 5, 5]"

    monkeypatch.setattr(FakeSession, "ask", ask)
    detection = ("--tasks", "detection_hbb", "--limit", "1")
    assert main(_model_args(tmp_path, records, *detection)) == 0
    assert rules and all(callable(rule) for rule in rules)
    assert json.loads((tmp_path / "report.json").read_text())["summary"]["stopped_by_rule"] == {}
    rules.clear()
    assert main(_model_args(tmp_path, records, *detection, "--no-stop-rule")) == 0
    assert rules and rules == [None] * len(rules)

    def no_bitsandbytes(name: str, **_: object) -> None:
        raise ImportError("bitsandbytes is not installed")

    monkeypatch.setattr(fake, "load_model", no_bitsandbytes)
    assert main(_model_args(tmp_path, records, "--load-4bit")) == 2
    assert "error: bitsandbytes is not installed" in capsys.readouterr().err


def test_cli_run_that_scores_nothing_fails_and_counts_only_the_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Review of 2026-12-04: with no image found, eval scored nothing and exited 0; and a --limit
    run called every other turn of the set 'unanswered'."""
    records = _write_set(tmp_path / "mmrs")
    _fake_inference(monkeypatch)
    assert main(_model_args(tmp_path, records, "--limit", "1")) == 2  # no images written
    err = capsys.readouterr().err
    assert "error: no turn was scored" in err and "set EARTHGPT_DATA" in err
    _write_images(tmp_path / "images", records)
    assert main(_model_args(tmp_path, records, "--limit", "1")) == 0
    assert json.loads((tmp_path / "report.json").read_text())["summary"]["turns_unanswered"] == 0
