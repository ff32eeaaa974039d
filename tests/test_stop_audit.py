"""The detection stop rule audited against reference answers: `python -m earthgpt.eval.stop_audit` on
small written sets, and on the real MMRS build, whose annotators' lists it must never cut."""

from __future__ import annotations

import json
from pathlib import Path

from earthgpt.eval.stop_audit import audit, kept_lines, main, reference_answers
from earthgpt.scene_detection import detection_stop_rule

MARCH = ("car [300, 300, 320, 350]\ncar [280, 300, 300, 350]\ncar [260, 300, 280, 350]\n"
         "car [250, 300, 280, 350]\n")
ROW = "car [10, 10, 20, 20]\ncar [22, 11, 32, 20]\ncar [34, 10, 44, 21]\ncar [46, 10, 56, 20]\n"


def _record(rid: str, split: str, answer: str, task: str = "detection_hbb") -> dict:
    return {"id": rid, "split": split, "image": f"{rid}.png", "dataset": rid.split("/")[0],
            "conversations": [{"from": "human", "value": "<image>\nDetect", "task": task},
                              {"from": "gpt", "value": answer}]}


def _write_set(folder: Path, records: list[dict]) -> Path:
    folder.mkdir()
    for split in ("train", "val"):
        rows = [json.dumps(r) for r in records if r["split"] == split]
        (folder / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    return folder


def test_kept_lines_and_audit_count_what_the_rule_refuses() -> None:
    rule = detection_stop_rule()
    assert kept_lines(MARCH, rule) == (3, True)
    assert kept_lines(ROW + "\n\n", rule) == (4, False)  # blank lines are not box lines
    result = audit([("a", MARCH), ("b", ROW), ("c", "")])
    assert (result.answers, result.lines, result.kept, result.cut) == (3, 8, 7, [("a", 3)])


def test_main_reports_cut_references_and_saved_answers(tmp_path: Path, capsys) -> None:
    clean = _write_set(tmp_path / "clean", [_record("hit_uav/1", "train", ROW),
                                            _record("dota/2", "val", ROW, "detection_obb"),
                                            _record("aid/3", "train", MARCH, "classification")])
    assert [name for name, _ in reference_answers(clean, "train")] == ["hit_uav/1"]
    saved = tmp_path / "saved.predictions.jsonl"
    saved.write_text("\n".join(json.dumps(row) for row in [
        {"id": "x", "turn": 0, "task": "detection_hbb", "answer": MARCH},
        {"id": "y", "turn": 0, "task": "vqa", "answer": MARCH},  # not a detection turn: left out
        {"id": "z", "turn": 0, "answer": ROW}]) + "\n")
    assert main(["--data", str(clean), "--predictions", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "reference train: 0 of 1 detection answers cut (4 box lines)" in out
    assert "reference val: 0 of 1 detection answers cut" in out
    assert "reference test: no detection answers" in out
    assert f"{saved}: 1 of 2 answers cut; 7 of 8 lines kept" in out

    marching = _write_set(tmp_path / "marching", [_record("hit_uav/1", "train", MARCH)])
    assert main(["--data", str(marching), "--splits", "train"]) == 1  # a cut reference fails
    assert "hit_uav/1: cut after 3 lines" in capsys.readouterr().out


def test_main_says_what_is_missing(tmp_path: Path, capsys) -> None:
    try:
        main(["--data", str(tmp_path / "none")])
    except SystemExit as stop:
        assert stop.code == 2
    assert "error: MMRS data not found" in capsys.readouterr().err


def test_the_rule_cuts_no_reference_answer_of_the_real_data(shared_mmrs: Path) -> None:
    """Every detection answer the data builder writes from the real annotations (HIT-UAV, SSDD,
    DOTA) passes the stop rule whole: the rule only ends lists no annotator writes."""
    answers = [pair for split in ("train", "val", "test") for pair in reference_answers(shared_mmrs, split)]
    assert len(answers) > 4000 and {name.split("/")[0] for name, _ in answers} >= {"hit_uav", "ssdd", "dota"}
    result = audit(answers)
    assert result.cut == [] and result.kept == result.lines > 30_000
