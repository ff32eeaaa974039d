"""The app's API (docs/APP_API.md) through the real ``gradio_client``: load, ask, detect, export,
save and reopen from a Python script, against the app on a free localhost port (scripted model)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pyogrio
import pytest
from browser_support import ScriptedChat, running_app

gradio_client = pytest.importorskip("gradio_client")

NAMED = {"open_image", "open_demo", "apply_sensor", "pick_window", "set_region", "clear_region", "ask",
         "task_detection_hbb", "task_caption", "clear_detections", "export_geojson", "export_gpkg",
         "save_session", "reopen_session", "repoint_session", "detect_scene", "cancel_scene", "draw_map"}


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    with running_app(lambda sensor: ScriptedChat(), "scripted") as url:
        yield url


def _client(url: str, tmp_path: Path) -> object:
    return gradio_client.Client(url, verbose=False, download_files=str(tmp_path))


def test_the_named_endpoints_are_the_documented_ones(app_url: str, tmp_path: Path) -> None:
    api = _client(app_url, tmp_path).view_api(return_format="dict", print_info=False)
    named = {name.lstrip("/") for name in api["named_endpoints"]}
    assert named >= NAMED
    page_only = {"click", "draw", "on_map", "follow", "redraw", "ask_1"}  # events only the page triggers
    assert not named & page_only and not any(name.startswith("lambda") for name in named)
    documented = (Path(__file__).resolve().parents[1] / "docs" / "APP_API.md").read_text()
    assert all(f"`/{name}`" in documented for name in NAMED)


def test_load_ask_detect_export_from_a_script(app_url: str, shared_data: Path, tmp_path: Path) -> None:
    client = _client(app_url, tmp_path)
    image = shared_data / "geotiff" / "optical" / "RGB.byte.tif"
    *_, status = client.predict(gradio_client.handle_file(str(image)), "auto", "", api_name="/open_image")
    assert status.startswith("Opened RGB.byte.tif")
    outputs = client.predict("What is in this window?", api_name="/ask")
    chat, status = outputs[2], outputs[-1]
    assert status.startswith("Answered") and "coastal scene" in chat[-1]["content"][0]["text"]
    outputs = client.predict("", "", api_name="/task_detection_hbb")
    assert "| ship |" in outputs[3] and "Detections: 3" in outputs[4]
    geojson, _, status = client.predict(api_name="/export_geojson")
    features = json.loads(Path(geojson).read_text())["features"]
    assert status.startswith("Exported RGB.byte") and {f["properties"]["class"] for f in features} == {
        "ship", "storage tank", "plane"}
    lon, lat = features[0]["geometry"]["coordinates"][0][0]
    assert -80 < lon < -76 and 23 < lat < 27  # the Landsat scene is over the Bahamas, UTM 18N
    gpkg, _, _ = client.predict(api_name="/export_gpkg")
    assert pyogrio.read_info(gpkg)["features"] == 3


def test_whole_scene_save_and_reopen_in_a_new_client(app_url: str, shared_data: Path, tmp_path: Path) -> None:
    client = _client(app_url, tmp_path)
    *_, status = client.predict("optical-landsat", api_name="/open_demo")
    assert status.startswith("Opened RGB.byte.tif")
    outputs = client.predict("", False, 512, 64, api_name="/detect_scene")
    progress, counts, status = outputs[-3:]
    assert "Done: 4 windows" in progress and "objects** in 4 of 4 windows" in counts
    assert status.startswith("Whole-scene detection done")
    assert client.predict(api_name="/cancel_scene") == "No whole-scene run to cancel."
    saved, _, status = client.predict(api_name="/save_session")
    assert status.startswith("Saved") and json.loads(Path(saved).read_text())["image"]["sha256"]
    again = _client(app_url, tmp_path)
    outputs = again.predict(gradio_client.handle_file(saved), api_name="/reopen_session")
    assert outputs[-1] == "Session reopened." and "Detections:" in outputs[4]
    outputs = again.predict(api_name="/clear_detections")
    assert outputs[-1].endswith("cleared; the conversation stays.")


class SlowChat(ScriptedChat):
    """The scripted model, taking a second per answer: long enough to cancel a whole-scene run."""

    def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False, **options: object):
        time.sleep(0.6)
        return super().ask(text, max_new_tokens, stream, **options)


@pytest.fixture(scope="module")
def slow_url() -> Iterator[str]:
    with running_app(lambda sensor: SlowChat(), "slow") as url:
        yield url


def test_a_script_cancels_a_whole_scene_run_and_keeps_what_is_done(slow_url: str, tmp_path: Path) -> None:
    client = _client(slow_url, tmp_path)
    client.predict("optical-landsat", api_name="/open_demo")
    job = client.submit("", False, 256, 0, api_name="/detect_scene")  # 12 windows of 256 px
    seen = []
    for outputs in job:
        seen.append(outputs[-1])
        if outputs[-1].startswith("Whole scene: window 3 of 12"):
            assert client.predict(api_name="/cancel_scene").startswith("Cancelling")
    progress, counts, status = job.outputs()[-1][-3:]
    assert seen[0] == "Whole scene: window 1 of 12…"
    done = re.match(r"Whole-scene detection cancelled after (\d+) of 12 windows: (\d+) objects kept", status)
    assert done and int(done[1]) in (3, 4)  # the window being answered is cut, and counts as done
    assert status.endswith("the answers being written when it stopped were cut short.")
    assert f"Cancelled after {done[1]} of 12 windows" in progress and f"in {done[1]} of 12 windows" in counts
    cleared = client.predict(api_name="/clear_detections")[-1]
    assert cleared.startswith(f"{done[2]} detections cleared")  # the kept detections were the session's


class TurnTakingChat:
    """Streams slowly and, like ``ChatSession``, refuses a question while an answer is streaming."""

    def __init__(self) -> None:
        self.streaming = False

    def set_image(self, rgb: object) -> None:
        pass

    def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False, **options: object):
        if self.streaming:
            raise ValueError("turns must alternate")
        self.streaming = True

        def pieces() -> Iterator[str]:
            try:
                for word in f"answer to {text[:20]}".split():
                    time.sleep(0.3)
                    yield word + " "
            finally:
                self.streaming = False

        return pieces()

    def restore(self, exchanges: list[tuple[str, str]]) -> None:
        pass


def test_a_second_turn_asked_while_one_streams_waits_for_it(tmp_path: Path) -> None:
    """Review of 2026-12-04: Detect HBB, then Send within a second, lost the Send turn (or showed the
    model's 'turns must alternate' error): both events read the session as it was before either."""
    with running_app(lambda sensor: TurnTakingChat(), "scripted") as url:
        client = _client(url, tmp_path)
        client.predict("optical-landsat", api_name="/open_demo")
        first = client.submit("", "", api_name="/task_detection_hbb")
        time.sleep(0.5)  # the detection answer is streaming
        second = client.submit("Is there a road?", api_name="/ask")
        second_out = second.result(timeout=60)
        first_out = first.result(timeout=60)
    assert not first_out[-1].startswith("⚠") and second_out[-1].startswith("Answered")
    texts = [m["content"][0]["text"] for m in second_out[2]]
    assert "Detect all objects" in texts[-4] and texts[-3].startswith("answer to This is")  # the first turn
    assert texts[-2] == "Is there a road?" and texts[-1].startswith("answer to Is there")  # then the second
    assert not any("model error" in t for t in texts)


def test_uploads_are_judged_by_content_not_name(app_url: str, tmp_path: Path) -> None:
    """Review of 2026-12-04: a JPEG 2000, and any file not named .tif/.png/.jpg, was refused by
    Gradio's file-type filter with an exception, never reaching the content check."""
    import numpy as np
    import rasterio

    jp2 = tmp_path / "scene.jp2"
    with rasterio.open(jp2, "w", driver="JP2OpenJPEG", width=64, height=48, count=3, dtype="uint8") as dst:
        dst.write(np.random.default_rng(0).integers(0, 255, (3, 48, 64), dtype=np.uint8))
    client = _client(app_url, tmp_path)
    *_, status = client.predict(gradio_client.handle_file(str(jp2)), "auto", "", api_name="/open_image")
    assert status.startswith("Opened scene.jp2")
    notes = tmp_path / "notes.md"
    notes.write_text("# not an image\n")
    *_, status = client.predict(gradio_client.handle_file(str(notes)), "auto", "", api_name="/open_image")
    assert status.startswith("⚠") and "scene.jp2 is still loaded" in status


def test_a_vh_uploaded_after_its_vv_opens_the_pair_as_the_composite(app_url: str, tmp_path: Path) -> None:
    """Review of 2026-12-04: the VH uploaded after the VV opened alone; now the VV opens again with it."""
    from test_app_security import _sar_pair_files

    files = _sar_pair_files(tmp_path)
    client = _client(app_url, tmp_path)
    *_, info, _, status = client.predict(gradio_client.handle_file(str(files["VV"])), "auto", "",
                                         api_name="/open_image")
    assert status.startswith("Opened S1A_IW_20250102_VV.tif (upload)") and "One polarisation" in info
    *_, info, _, status = client.predict(gradio_client.handle_file(str(files["VH"])), "auto", "",
                                         api_name="/open_image")
    assert status.startswith("Opened S1A_IW_20250102_VV.tif (with S1A_IW_20250102_VH.tif, just uploaded")
    assert "One polarisation" not in info and "sar" in info.lower()
