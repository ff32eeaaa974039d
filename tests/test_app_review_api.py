"""The Review tab's endpoints (docs/APP_API.md) through the real ``gradio_client``: pick, accept,
relabel, add a rotated box and export MMRS training records from a Python script."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_support import ScriptedChat, running_app

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    with running_app(lambda sensor: ScriptedChat(), "scripted") as url:
        yield url


def test_review_and_export_training_records_from_a_script(app_url: str, tmp_path: Path) -> None:
    client = gradio_client.Client(app_url, verbose=False, download_files=str(tmp_path))
    client.predict("optical-landsat", api_name="/open_demo")
    client.predict("", "", api_name="/task_detection_hbb")
    table, _picker, label, _note, box, angle, _editor, summary = client.predict(1, api_name="/review_pick")
    assert (label, box, angle) == ("ship", "[120, 180, 260, 300]", 0)
    assert summary == "3 annotations: 0 accepted, 3 pending" and len(table["data"]) == 3
    assert client.predict("", "", "", 0, api_name="/review_accept")[-1] == "Accepted #1."
    client.predict(2, api_name="/review_pick")
    assert client.predict("oil tank", "", "", 0, api_name="/review_apply")[-1] == "Updated #2."
    outputs = client.predict("car", "the car by the road", "[10, 10, 60, 40]", 30, api_name="/review_add")
    assert outputs[-1] == "Added #4 (car, analyst)."
    row = outputs[5]["data"][3]
    assert row[2:] == ["car", "the car by the road", "obb", "[10, 10, 60, 40]", 30, "analyst"]
    _, _, label, *_, summary = client.predict(9, api_name="/review_pick")  # no #9: nothing picked
    assert label == "" and summary == "4 annotations: 3 accepted, 1 pending"
    archive, note, status = client.predict(api_name="/export_mmrs")
    assert status == "Exported RGB.byte_mmrs.zip." and "1 pending detection(s) left out" in note
    with zipfile.ZipFile(archive) as packed:
        (name,) = [n for n in packed.namelist() if n.endswith("records.jsonl")]
        (record,) = [json.loads(line) for line in packed.read(name).decode().splitlines()]
    assert record["tasks"] == ["detection_hbb", "detection_obb", "grounding", "region_caption"]
    assert [o["label"] for o in record["annotations"]["objects_hbb"]] == ["ship", "oil tank", "car"]
