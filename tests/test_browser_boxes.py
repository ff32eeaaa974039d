"""Unusable boxes in the browser: a detection answer mixing good boxes with the default model's
degenerate ``car [161, 161, 161, 161]`` (and swapped corners, a box off the image). The table marks
them invalid with the reason, the map draws the good ones only, both exports work, and *Clear
detections* empties the overlays, the table, the map and the exports.

Real clicks on the page; the app runs on localhost with a scripted model (:class:`DegenerateChat`),
and once with the default model (``nano``, marked slow through ``nano_base``), whose answers are
whatever it writes: no error may follow from them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from browser_support import detect_on_demo_with_nano, open_page, running_app, shot, wait_status

pytestmark = pytest.mark.browser

ANSWER = ("car [161, 161, 161, 161]\nship [120, 180, 260, 300]\ncar [161, 161, 161, 161]\n"
          "storage tank [600, 540, 520, 620]\nplane [640, 120, 760, 160, 740, 240, 620, 200]\n"
          "pier [1100, 40, 1180, 90]")
"""Two usable boxes (a ship, an oriented plane) among four invalid ones."""


class DegenerateChat:
    """Detection prompts get :data:`ANSWER`, everything else a short sentence; streamed by word."""

    def set_image(self, rgb: np.ndarray) -> None:
        self.shape = rgb.shape

    def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False, **options: object):
        answer = ANSWER if "Detect all objects" in text else "A coastal scene."
        pieces = [word + " " for word in answer.split(" ")]
        return iter(pieces) if stream else "".join(pieces)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with running_app(lambda sensor: DegenerateChat(), "scripted") as url:
        yield url


def _export(page: object, button: str) -> bytes:
    """Click an export button and download the file it offers."""
    page.get_by_role("tab", name="Export & session").click()
    page.click(button)
    wait_status(page, "Exported")
    link = page.locator("#download a").first
    link.wait_for(timeout=20000)
    return page.request.get(link.get_attribute("href")).body()


def _map_paths(page: object, count: int) -> None:
    """Open the map tab and wait until it draws ``count`` detection outlines."""
    page.get_by_role("tab", name="Map").click()
    for _ in range(80):  # the sandboxed map frame is read through Playwright, not the page's DOM
        frame = page.frame_locator("#map iframe")
        if frame.locator(".leaflet-image-layer").count() and \
                frame.locator(".leaflet-overlay-pane svg path").count() == count:
            return
        page.wait_for_timeout(250)
    raise AssertionError(f"the map did not show {count} detection outline(s)")


def test_degenerate_boxes_are_invalid_and_cleared(browser: object, server: str, shots: Path,
                                                  tmp_path: Path) -> None:
    outside: list[str] = []
    page = open_page(browser, server, outside)
    page.click("#open-demo")
    wait_status(page, "Opened")
    page.click("#task-detection_hbb")
    page.wait_for_function("document.querySelector('#parsed').innerText.includes('invalid because')")
    wait_status(page, "Answered")
    parsed = page.inner_text("#parsed")
    assert "4 invalid boxes" in parsed and "not drawn, mapped or exported" in parsed
    for reason in ("zero area", "x1 > x2", "off the image"):
        assert f"⚠ {reason}" in parsed
    assert "ship" in parsed and "-7" in parsed  # the usable ship placed in lon/lat
    assert "Detections: 2" in page.inner_text("#info")
    shot(page, shots / "app-invalid-boxes.png")
    page.locator("#parsed").screenshot(path=str(shots / "app-invalid-boxes-table.png"))

    _map_paths(page, 2)
    assert "Not on the map" not in page.inner_text("#map")
    shot(page, shots / "app-invalid-boxes-map.png")

    geojson = json.loads(_export(page, "#export-geojson"))
    assert sorted(f["properties"]["class"] for f in geojson["features"]) == ["plane", "ship"]
    assert "2 detections exported." in page.inner_text("#export-note")
    gpkg = tmp_path / "detections.gpkg"
    gpkg.write_bytes(_export(page, "#export-gpkg"))
    import pyogrio

    info = pyogrio.read_info(gpkg)
    assert info["geometry_type"] == "Polygon" and info["features"] == 2

    page.get_by_role("tab", name="Image").click()
    page.click("#clear-detections")
    wait_status(page, "2 detections cleared")
    assert "Detections: 0" in page.inner_text("#info")
    assert "| ship" not in page.inner_text("#parsed") and "4 invalid boxes" in page.inner_text("#parsed")
    _map_paths(page, 0)
    page.get_by_role("tab", name="Export & session").click()
    page.click("#export-geojson")
    wait_status(page, "⚠")
    assert "nothing to export" in page.input_value("#status textarea")
    assert outside == [], f"the page reached outside localhost: {outside[:5]}"
    page.close()


def test_default_model_detections_never_break_the_map_or_exports(browser: object, nano_server: str,
                                                                  shots: Path) -> None:
    outside: list[str] = []
    page = open_page(browser, nano_server, outside)
    found = detect_on_demo_with_nano(page)
    parsed = page.inner_text("#parsed")
    shot(page, shots / "app-nano-detections.png")
    _map_paths(page, found)
    if found:
        data = json.loads(_export(page, "#export-geojson"))
        assert len(data["features"]) == found
    else:  # nothing usable: the table says why, the export says there is nothing
        assert "No usable boxes" in parsed or "No boxes parsed" in parsed
        page.get_by_role("tab", name="Export & session").click()
        page.click("#export-geojson")
        wait_status(page, "⚠")
        assert "nothing to export" in page.input_value("#status textarea")
    assert "unexpected error" not in page.input_value("#status textarea")
    assert outside == [], f"the page reached outside localhost: {outside[:5]}"
    page.close()
