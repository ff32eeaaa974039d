"""The layout an analyst works in, region drawing, the map that follows the session, and the
smaller symptoms of issue 10, in headless Chromium with real clicks and drags.

With the scripted model (``server``), and once with the default model (``nano_server`` of
conftest.py, marked slow through ``nano_base``): its weak answers (repeated, zero-width boxes) must
not break the layout, the map or the region drawing.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from browser_support import drag, settled_canvas, shot, wait_status
from PIL import Image

pytestmark = pytest.mark.browser

SIDE_BY_SIDE = ("#annotator canvas", "#chatbot", "#send", "#status textarea")


def _new_page(browser: object, server: str, width: int, height: int) -> object:
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(server, wait_until="load")
    page.wait_for_selector("#open-demo", timeout=60000)
    return page


def _status(page: object) -> str:
    return page.input_value("#status textarea")


def _wait_new_status(page: object, before: str, prefix: str, timeout: int = 30000) -> str:
    page.wait_for_function(
        "([b, p]) => { const v = document.querySelector('#status textarea').value; "
        "return v !== b && v.startsWith(p); }", arg=[before, prefix], timeout=timeout)
    return _status(page)


def _open_demo(page: object, name: str | None = None) -> None:
    if name:
        page.click("#demo-pick input")
        page.get_by_role("option", name=name).click()
    before = _status(page)
    page.click("#open-demo")
    _wait_new_status(page, before, "Opened")


def _upload(page: object, path: Path) -> None:
    page.locator("#upload input[type=file]").set_input_files(str(path))


def _draw_on_image(page: object, start: tuple[float, float], end: tuple[float, float]) -> str:
    before = _status(page)
    drag(page, settled_canvas(page), start, end)
    return _wait_new_status(page, before, "Region set on the image")


def _pixels(status: str) -> list[float]:
    """The pixel box of a "Region set …: [x1, y1, x2, y2] px, …" status line."""
    return [float(v) for v in status.split(": [", 1)[1].split("]", 1)[0].split(",")]


def _in_view(box: dict, width: int, height: int) -> bool:
    return (box["x"] >= 0 and box["y"] >= 0
            and box["x"] + box["width"] <= width and box["y"] + box["height"] <= height)


@pytest.mark.parametrize("width,height", [(1280, 800), (1920, 1080)])
def test_image_and_chat_side_by_side_with_status_and_send_in_view(
    browser: object, server: str, shots: Path, width: int, height: int
) -> None:
    page = _new_page(browser, server, width, height)
    _open_demo(page)
    settled_canvas(page)
    boxes = {sel: page.locator(sel).first.bounding_box() for sel in SIDE_BY_SIDE}
    for sel, box in boxes.items():
        assert box and _in_view(box, width, height), f"{sel} is not in the {width}×{height} viewport: {box}"
    image, chat = boxes["#annotator canvas"], boxes["#chatbot"]
    assert image["x"] + image["width"] <= chat["x"], "the image and the chat are not side by side"
    assert image["height"] > 0.5 * height and chat["height"] > 0.4 * height
    shot(page, shots / f"layout-{width}x{height}.png")
    page.close()


def test_small_tiles_are_enlarged_for_display(browser: object, server: str, tmp_path: Path) -> None:
    page = _new_page(browser, server, 1280, 800)
    _open_demo(page, "sar-sentinel1")  # 100 × 100 pixels
    assert "100×100 px" in page.inner_text("#info")
    assert settled_canvas(page)["height"] > 400
    small = tmp_path / "small.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 150, 3), dtype=np.uint8)).save(small)
    before = _status(page)
    _upload(page, small)
    _wait_new_status(page, before, "Opened small.jpg")
    canvas = settled_canvas(page)
    assert canvas["width"] > 400 and canvas["height"] > 300, canvas  # shown at 150×120 it would be tiny
    text = _draw_on_image(page, (0.2, 0.25), (0.6, 0.75))  # the region is in the tile's own pixels
    assert _pixels(text) == pytest.approx([30, 30, 90, 90], abs=2), text
    page.close()


def test_a_region_can_be_drawn_again_and_again(browser: object, server: str, tmp_path: Path) -> None:
    page = _new_page(browser, server, 1280, 800)
    _open_demo(page)
    first = _draw_on_image(page, (0.2, 0.2), (0.4, 0.5))
    second = _draw_on_image(page, (0.5, 0.3), (0.8, 0.7))
    assert first != second
    assert "[" in page.input_value("#typed-region textarea")  # the grid box of the region
    assert "Region: [" in page.inner_text("#info")
    jpeg = tmp_path / "second.jpg"
    Image.fromarray(np.full((300, 400, 3), 90, np.uint8)).save(jpeg)
    before = _status(page)
    _upload(page, jpeg)
    _wait_new_status(page, before, "Opened second.jpg")
    assert "Region: none" in page.inner_text("#info")
    third = _draw_on_image(page, (0.25, 0.25), (0.75, 0.75))
    assert _pixels(third) == pytest.approx([100, 75, 300, 225], abs=2), third
    page.click("#clear-region")
    _wait_new_status(page, third, "Region cleared")
    page.close()


def _map_paths(page: object) -> int:
    return page.frame_locator("#map iframe").locator(".leaflet-overlay-pane svg path").count()


def _wait_for_map_paths(page: object, count: int, timeout_s: float = 30.0) -> None:
    """Poll until the map shows ``count`` drawn boxes: the map's frame is rebuilt when the answer
    lands, so one locator wait can watch a frame that is about to be replaced."""
    deadline = time.monotonic() + timeout_s
    while _map_paths(page) != count:
        assert time.monotonic() < deadline, f"the map shows {_map_paths(page)} boxes, expected {count}"
        page.wait_for_timeout(250)


def _map_image(page: object) -> str:
    layer = page.frame_locator("#map iframe").locator(".leaflet-image-layer")
    layer.wait_for(timeout=20000)
    return layer.get_attribute("src")


def test_map_follows_the_session_and_a_box_drawn_on_it_is_the_region(
    browser: object, server: str, tmp_path: Path, shots: Path
) -> None:
    page = _new_page(browser, server, 1280, 800)
    _open_demo(page)
    page.click("#task-detection_hbb")
    wait_status(page, "Answered")
    page.get_by_role("tab", name="Map").click()  # no "Redraw map": the map is there already
    frame = page.frame_locator("#map iframe")
    _wait_for_map_paths(page, 3)
    landsat = _map_image(page)

    jpeg = tmp_path / "thermal.jpg"
    Image.fromarray(np.full((200, 300, 3), 160, np.uint8)).save(jpeg)
    before = _status(page)
    _upload(page, jpeg)
    _wait_new_status(page, before, "Opened thermal.jpg")
    page.wait_for_function("s => { const f = document.querySelector('#map iframe'); "
                           "return f && !f.srcdoc.includes(s.slice(-200)); }", arg=landsat, timeout=20000)
    assert _map_image(page) != landsat and _map_paths(page) == 0  # the new image, none of the old boxes
    page.click("#task-detection_hbb")  # while the map is open: it redraws with the new boxes
    frame.locator(".leaflet-overlay-pane svg path").nth(2).wait_for(timeout=30000)
    assert _map_paths(page) == 3

    frame.locator(".earthgpt-draw-region").click()
    image = frame.locator(".leaflet-image-layer").bounding_box()
    before = _status(page)
    drag(page, image, (0.25, 0.2), (0.75, 0.8))
    text = _wait_new_status(page, before, "Region set on the map")
    assert _pixels(text) == pytest.approx([75, 40, 225, 160], abs=3), text
    grid = page.input_value("#typed-region textarea")
    assert grid.startswith("[") and grid in text
    page.click("#task-region_caption")
    page.wait_for_function("document.querySelector('#chatbot').innerText.includes('of the region')")
    shot(page, shots / "layout-map-region.png")
    page.close()


def test_messages_prompt_sensor_and_failed_upload(browser: object, server: str, tmp_path: Path) -> None:
    page = _new_page(browser, server, 1280, 800)
    _open_demo(page)
    assert "(set by the demo tile)" in page.inner_text("#info")
    assert page.input_value("#sensor input") == "detect (auto)"
    page.fill("#prompt textarea", "What is in this image?")
    page.click("#send")
    wait_status(page, "Answered")
    assert page.input_value("#prompt textarea") == ""
    assert "What is in this image?" in page.inner_text("#chatbot")

    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"this is not a GeoTIFF")
    before = _status(page)
    _upload(page, broken)
    text = _wait_new_status(page, before, "⚠")
    assert "broken.tif" in text and "RGB.byte.tif is still loaded" in text, text
    assert "/tmp" not in text and "gradio" not in text, text
    page.wait_for_function("!document.querySelector('#upload').innerText.includes('broken.tif')")
    assert "RGB.byte.tif" in page.inner_text("#info")
    page.close()


def test_default_model_layout_map_and_regions(browser: object, nano_server: str, shots: Path) -> None:
    page = _new_page(browser, nano_server, 1280, 800)
    _open_demo(page)
    page.click("#task-detection_hbb")
    wait_status(page, "Answered", timeout=240000)
    for sel in SIDE_BY_SIDE:
        assert _in_view(page.locator(sel).first.bounding_box(), 1280, 800), sel
    first = _draw_on_image(page, (0.2, 0.2), (0.45, 0.5))
    second = _draw_on_image(page, (0.5, 0.5), (0.7, 0.8))
    assert first != second
    page.click("#task-region_caption")
    wait_status(page, "Answered", timeout=240000)
    shot(page, shots / "layout-nano.png")
    page.get_by_role("tab", name="Map").click()
    _map_image(page)  # drawn without "Redraw map", whatever boxes the model wrote
    assert not _status(page).startswith("⚠"), _status(page)
    page.close()
