"""Building an MMRS set end to end: merging, template turns, determinism, counted skips, the
command line, the card and the torch-free reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from earthgpt.cli import main
from earthgpt.data.builder import SourceSpec, build
from earthgpt.data.image_resolver import ImageResolver
from earthgpt.data.mmrs_reader import DataError, read_records, record_turns
from earthgpt.data.recipes import SHARED_RECIPE, specs_from_recipe


def _small_specs(data: Path) -> list[SourceSpec]:
    keep = {"rsicd/dataset_rsicd.json", "dota", "ssdd", "dior_rsvg", "rsvqa_lr"}
    return [s for s in specs_from_recipe(SHARED_RECIPE, data) if str(s.path.relative_to(data)) in keep]


def _records(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in read_records(out)}


def test_build_is_byte_identical_and_portable(shared_data: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    card = build(_small_specs(shared_data), first, progress=False)
    build(list(reversed(_small_specs(shared_data)))[::-1], second, progress=False)
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "card.json", "card.md"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    text = "".join((first / n).read_text() for n in ("train.jsonl", "val.jsonl", "test.jsonl", "card.json"))
    assert str(shared_data.resolve()) not in text and str(tmp_path) not in text
    records = _records(first)
    assert all(not Path(r["image"]).is_absolute() and ".." not in r["image"] for r in records.values())
    assert card["totals"]["records"] == len(records) == 12 + 2 + 4 + 1 + 50
    ids = [r["id"] for r in read_records(first / "train.jsonl")]
    assert ids == sorted(ids)


def test_records_follow_the_schema_and_merge_box_kinds(shared_data: Path, tmp_path: Path) -> None:
    build(_small_specs(shared_data), tmp_path, progress=False)
    records = _records(tmp_path)
    ship = records["ssdd/000001"]  # coco (HBB) and VOCOBB (OBB) merged into one record
    assert list(ship) == [
        "id",
        "image_root",
        "image",
        "width",
        "height",
        "sensor",
        "dataset",
        "licence",
        "split",
        "tasks",
        "annotations",
        "conversations",
    ]
    assert (ship["image_root"], ship["image"], ship["sensor"], ship["split"]) == (
        "ssdd",
        "coco/images/000001.jpg",
        "sar",
        "train",
    )
    assert set(ship["annotations"]) == {"objects_hbb", "objects_obb"}
    messages = ship["conversations"]
    assert messages[0]["value"].startswith("<image>\nThis is a SAR image. Detect all objects")
    assert [m["from"] for m in messages] == ["human", "assistant"] * (len(messages) // 2)
    assert sum("<image>" in m["value"] for m in messages) == 1
    pairs = list(record_turns(ship))
    assert [p.task for p in pairs[:2]] == ["detection_hbb", "detection_obb"]
    assert pairs[1].answer == "ship [517, 149, 627, 139, 644, 443, 536, 455]"
    generated = {(p.task, p.question_type, p.answer) for p in pairs if p.generated}
    assert ("vqa", "count", "1") in generated and ("vqa", "presence", "yes") in generated
    assert any(p.task == "grounding" and p.answer == "[526, 149, 641, 454]" for p in pairs if p.generated)
    assert all(not p.generated for p in pairs[:2])
    vqa = record_turns(records["rsvqa_lr/0"])
    assert len(vqa) == 100 and {p.question_type for p in vqa} == {
        "rural_urban",
        "presence",
        "count",
        "comparison",
    }


def test_aid_gets_a_generated_caption(shared_data: Path, tmp_path: Path) -> None:
    card = build([SourceSpec("aid", shared_data / "aid")], tmp_path, progress=False)
    assert card["by_task"]["caption"] == {"generated_turns": 1800, "records": 1800, "turns": 1800}
    record = _records(tmp_path)["aid/Airport/airport_100"]
    pairs = list(record_turns(record))
    assert [(p.task, p.answer, p.generated) for p in pairs] == [
        ("classification", "airport", False),
        ("caption", "An aerial image of an airport.", True),
    ]
    assert ImageResolver(roots={"aid": shared_data / "aid"})(record).is_file()


def _voc_xml(name: str, box: tuple[int, int, int, int]) -> str:
    x1, y1, x2, y2 = box
    return (
        f"<annotation><filename>{name}.jpg</filename><size><width>64</width><height>32</height></size>"
        f"<object><name>Car</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object></annotation>"
    )


def test_bad_and_missing_files_are_counted_skips(tmp_path: Path) -> None:
    root = tmp_path / "toy"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    Image.new("RGB", (64, 32)).save(root / "JPEGImages" / "good.jpg")
    (root / "JPEGImages" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "Annotations" / "good.xml").write_text(_voc_xml("good", (8, 8, 32, 24)))
    (root / "Annotations" / "corrupt.xml").write_text("<annotation><object><name>Car</name>")
    (root / "Annotations" / "noimage.xml").write_text(_voc_xml("noimage", (1, 1, 5, 5)))
    (root / "Annotations" / "broken.xml").write_text(_voc_xml("broken", (1, 1, 5, 5)))
    card = build([SourceSpec("voc-hbb", root, (("split", "test"),))], tmp_path / "out", progress=False)
    assert card["totals"]["records"] == 1
    reasons = {row["reason"]: (row["count"], row["examples"]) for row in card["skipped"]}
    assert reasons == {
        "XML file unreadable or malformed": (1, ["Annotations/corrupt.xml"]),
        "image file missing": (1, ["Annotations/noimage.xml"]),
        "image file unreadable": (1, ["JPEGImages/broken.jpg"]),
    }
    record = _records(tmp_path / "out")["toy/good"]
    assert record["annotations"]["objects_hbb"] == [
        {"label": "car", "xyxy_px": [8, 8, 32, 24], "difficult": False}
    ]
    assert record_turns(record)[0].answer == "car [125, 250, 500, 750]"
    assert "XML file unreadable or malformed: 1" in (tmp_path / "out" / "card.md").read_text()


def test_coco_captions_and_llava_sets(tmp_path: Path) -> None:
    root = tmp_path / "caps"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (20, 10)).save(root / "images" / name)
    coco = {
        "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
        "annotations": [
            {"image_id": 1, "caption": "A river ."},
            {"image_id": 1, "caption": "a river."},
            {"image_id": 1, "caption": "A bridge over a river."},
        ],
    }
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps(coco))
    llava = [
        {
            "id": "x",
            "image": "b.png",
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe the image."},
                {"from": "gpt", "value": "A dark field."},
            ],
        },
        {"id": "y", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
    ]
    (root / "llava.json").write_text(json.dumps(llava))
    card = build(
        [
            SourceSpec("coco-captions", root),
            SourceSpec("llava", root / "llava.json", (("images", "images"),)),
        ],
        tmp_path / "out",
        progress=False,
    )
    records = _records(tmp_path / "out")
    assert records["caps/a"]["split"] == "val"
    assert [p.answer for p in record_turns(records["caps/a"])] == ["A river.", "A bridge over a river."]
    assert [(p.question, p.answer, p.task) for p in record_turns(records["caps/b"])] == [
        ("Describe the image.", "A dark field.", "caption")
    ]
    assert {(r["reason"], r["count"]) for r in card["skipped"]} == {
        ("image without captions", 1),
        ("entry without an image", 1),
    }


def test_cli_build_with_options_and_errors(shared_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    rc = main(
        [
            "mmrs",
            "build",
            "--source",
            f"rsvqa={shared_data / 'rsvqa_lr'}",
            "--option",
            "rsvqa_lr.split=test",
            "--option",
            "rsvqa.ext=.png",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0 and "50 records, 5005 turns" in capsys.readouterr().out
    assert [p.name for p in sorted(out.iterdir())] == [
        "card.json",
        "card.md",
        "image_roots.json",
        "test.jsonl",
        "train.jsonl",
        "val.jsonl",
    ]
    turns = [t for r in read_records(out, "test") for t in record_turns(r) if t.task == "vqa"]
    assert len(turns) == 5005
    roots = json.loads((out / "image_roots.json").read_text())  # where eval and training find the images
    assert (out / roots["rsvqa_lr"]).resolve() == (shared_data / "rsvqa_lr").resolve()
    card = json.loads((out / "card.json").read_text())
    assert card["by_split"]["test"]["records"] == 50 and card["sources"][0]["options"] == {
        "ext": ".png",
        "split": "test",
    }
    assert main(["mmrs", "build", "--source", f"nope={shared_data}", "--out", str(out)]) == 2
    assert "unknown source kind 'nope'" in capsys.readouterr().err
    assert (
        main(
            [
                "mmrs",
                "build",
                "--source",
                f"dota={shared_data / 'dota'}",
                "--option",
                "dota.colour=red",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "unknown option(s) colour" in capsys.readouterr().err


def test_reader_rejects_malformed_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": "a", "conversations": []}\n\n[1, 2]\n')
    with pytest.raises(DataError, match=r"x.jsonl:3: expected a JSON object"):
        read_records(path)
