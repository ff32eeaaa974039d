"""``earthgpt mmrs build --source mmrs=FILE`` on records from outside: annotations of the wrong shape
(a box of 3 numbers, text where a list belongs, a polygon of 5 numbers, wrong types deeper down)
and sizes that are not whole numbers of pixels are counted skips naming the record's line and its
field, and the other records of the file are built."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from earthgpt.cli import main
from earthgpt.data.annotation_schema import AnnotationError, check_annotations
from earthgpt.data.mmrs_reader import read_records

GOOD = {"id": "set/good", "image": "a.png", "width": 64, "height": 48,
        "annotations": {"objects_hbb": [{"label": "ship", "xyxy_px": [1, 2, 30, 40]}]}}

BAD = [  # (what the record says, the skip's reason, what its example says after the line)
    ({"class": 5}, "annotations (class)", "annotations.class: expected text, got a number"),
    ({"objects_hbb": 5}, "annotations (objects_hbb)",
     "annotations.objects_hbb: expected a list, got a number"),
    ({"objects_hbb": [{"label": "ship", "xyxy_px": [1, 2, 3]}]}, "annotations (objects_hbb)",
     "annotations.objects_hbb[0].xyxy_px: expected 4 numbers, got 3"),
    ({"objects_hbb": [{"label": "ship", "xyxy_px": "1, 2, 3, 4"}]}, "annotations (objects_hbb)",
     "annotations.objects_hbb[0].xyxy_px: expected a list, got text"),
    ({"objects_obb": [{"label": "ship", "corners_px": [1, 2, 3, 4, 5]}]}, "annotations (objects_obb)",
     "annotations.objects_obb[0].corners_px: expected 8 numbers, got 5"),
    ({"objects_obb": [[1, 2, 3, 4, 5, 6, 7, 8]]}, "annotations (objects_obb)",
     "annotations.objects_obb[0]: expected an object, got a list"),
    ({"objects_hbb": [{"label": "ship", "xyxy_px": [1, 2, [3], 4]}]}, "annotations (objects_hbb)",
     "annotations.objects_hbb[0].xyxy_px[2]: expected a number, got a list"),
    ({"objects_hbb": [{"label": "ship", "xyxy_px": [30, 2, 1, 40]}]}, "annotations (objects_hbb)",
     "annotations.objects_hbb[0].xyxy_px: expected x1 <= x2 and y1 <= y2, got [30, 2, 1, 40]"),
    ({"objects_hbb": [{"label": "ship [1]", "xyxy_px": [1, 2, 3, 4]}]}, "annotations (objects_hbb)",
     "annotations.objects_hbb[0].label: a class name cannot hold brackets, got 'ship [1]'"),
    ({"qa": [{"question": "Any ship?", "answer": "yes"}]}, "annotations (qa)",
     "annotations.qa[0]: missing type"),
    ({"captions": "A harbour."}, "annotations (captions)", "annotations.captions: expected a list, got text"),
    ({"referring": [{"expression": "...", "xyxy_px": [1, 2, 3, 4]}]}, "annotations (referring)",
     "annotations.referring[0].expression: expected words, got '...'"),
    ({"dialogue_task": ["caption"]}, "annotations (dialogue_task)",
     "annotations.dialogue_task: expected one of classification, caption, vqa, detection_hbb, detection_obb, "
     "grounding, region_caption, got ['caption']"),
]


def _build(tmp_path: Path, records: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
           ) -> tuple[list[dict[str, Any]], dict[str, list[str]], str]:
    """Build the records through the command line: what it wrote, its skips (reason → examples), stdout."""
    source = tmp_path / "records.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in records))
    out = tmp_path / "out"
    assert main(["mmrs", "build", "--source", f"mmrs={source}", "--out", str(out), "--no-progress"]) == 0
    card = json.loads((out / "card.json").read_text())
    skipped = {row["reason"]: row["examples"] for row in card["skipped"]}
    written = read_records(out, "train") if card["totals"]["records"] else []
    return written, skipped, capsys.readouterr().out


@pytest.mark.parametrize(("annotations", "reason", "detail"), BAD, ids=[r for _, r, _ in BAD])
def test_annotations_of_the_wrong_shape_are_skipped_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], annotations: dict[str, Any], reason: str, detail: str
) -> None:
    written, skipped, out = _build(tmp_path, [GOOD, {**GOOD, "id": "set/bad", "annotations": annotations}],
                                   capsys)
    assert [r["id"] for r in written] == ["set/good"]
    assert skipped == {f"record with malformed {reason}": [f"records.jsonl:2 {detail}"]}
    line = f"skipped 1 (mmrs:{tmp_path.name}): record with malformed {reason}, e.g. records.jsonl:2 {detail}"
    assert f"  {line}\n" in out


@pytest.mark.parametrize(("field", "value"), [
    ("width", float("inf")), ("width", 3.5), ("height", 0), ("height", "48"), ("width", True),
    ("width", 10**400),
])
def test_a_size_that_is_not_a_whole_number_of_pixels_is_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, value: Any
) -> None:
    written, skipped, _ = _build(tmp_path, [GOOD, {**GOOD, "id": "set/bad", field: value}], capsys)
    assert [r["id"] for r in written] == ["set/good"]
    (examples,) = skipped.values()
    assert list(skipped) == ["record with a bad width or height"]
    assert examples[0].startswith(f"records.jsonl:2 {field} ")


def test_every_annotation_of_the_schema_passes_and_a_float_size_that_is_whole_is_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    annotations = {
        "class": "harbour", "captions": ["A harbour."], "dialogue_task": "vqa",
        "provenance": {"any": ["thing"]},
        "qa": [{"question": "Is there a ship?", "answer": "yes", "type": "presence"}],
        "objects_hbb": [{"label": "ship", "xyxy_px": [1, 2.5, 30, 40], "difficult": False}],
        "objects_obb": [{"label": "ship", "corners_px": [1, 2, 30, 2, 30, 40, 1, 40]}],
        "referring": [{"expression": "The ship.", "label": "ship", "xyxy_px": [1, 2, 30, 40]}],
        "dialogue": [{"human": "What is this?", "assistant": "A harbour."}],
    }
    check_annotations(annotations)
    whole = {**GOOD, "id": 7, "width": 64.0, "annotations": annotations}
    (record,), skipped, _ = _build(tmp_path, [whole], capsys)
    assert skipped == {} and record["id"] == "7" and record["width"] == 64
    assert record["tasks"] == ["classification", "caption", "vqa", "detection_hbb", "detection_obb",
                               "grounding", "region_caption"]
    with pytest.raises(AnnotationError, match=r"^annotations: expected an object, got a list$"):
        check_annotations([annotations])
