"""The app in headless Chromium: load a demo tile, chat, draw a region, detect, map, export.

The server runs in a thread on a free localhost port with a scripted model (fixed answers, so
the boxes drawn and exported are known). Every request the page makes must stay on localhost.
Set ``EARTHGPT_SCREENSHOTS=docs`` to write the screenshots into ``docs/`` (else a temp folder).
Without Chromium or Playwright the tests skip, or fail when ``EARTHGPT_REQUIRE_BROWSER=1`` (CI).
"""

from __future__ import annotations

import io
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]
DETECTIONS = ("ship [120, 180, 260, 300]\nstorage tank [520, 540, 600, 620]\n"
              "plane [640, 120, 760, 160, 740, 240, 620, 200]")

pytestmark = pytest.mark.browser


class ScriptedChat:
    """Detection prompts get :data:`DETECTIONS`, everything else a short sentence; streamed by word."""

    def set_image(self, rgb: np.ndarray) -> None:
        self.shape = rgb.shape

    def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False):
        answer = DETECTIONS if "Detect all objects" in text else f"A coastal scene ({len(text)} characters)."
        pieces = [word + " " for word in answer.split(" ")]
        pieces[-1] = pieces[-1].rstrip()
        return iter(pieces) if stream else "".join(pieces)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _unavailable(reason: str) -> NoReturn:
    """Skip the browser tests, or fail them where they must run (``EARTHGPT_REQUIRE_BROWSER=1``)."""
    if os.environ.get("EARTHGPT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}; EARTHGPT_REQUIRE_BROWSER=1 says the browser tests must run", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    from app.handlers import Engine
    from app.ui import build, theme

    demo = build(Engine("scripted", lambda sensor: ScriptedChat()))
    port = _free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, theme=theme(),
                        footer_links=[], share=False, quiet=True)
    yield f"http://127.0.0.1:{port}"
    demo.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium) so the browser tests cannot run")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright for Python is not installed")
    with sync_playwright() as play:
        chromium = play.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = os.environ.get("EARTHGPT_SCREENSHOTS")
    return Path(folder) if folder else tmp_path


def _shot(page: object, path: Path) -> None:
    """A screenshot squeezed to a 128-colour PNG (docs images stay small)."""
    from PIL import Image

    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(300)
    image = Image.open(io.BytesIO(page.screenshot(full_page=False))).convert("RGB")
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def _wait_status(page: object, prefix: str, timeout: int = 30000) -> None:
    page.wait_for_function(
        "p => { const t = document.querySelector('#status textarea'); return t && t.value.startsWith(p); }",
        arg=prefix, timeout=timeout)


def _open(browser: object, server: str, outside: list[str]) -> object:
    page = browser.new_page(viewport={"width": 1440, "height": 1150})
    page.on("request", lambda r: outside.append(r.url)
            if not r.url.startswith((server, "data:", "blob:", "about:")) else None)
    page.goto(server, wait_until="load")
    page.wait_for_selector("#open-demo", timeout=60000)
    return page


def test_analyst_session_end_to_end(browser: object, server: str, shots: Path) -> None:
    outside: list[str] = []
    page = _open(browser, server, outside)
    page.click("#open-demo")
    _wait_status(page, "Opened")
    assert "EPSG:32618" in page.inner_text("#info")

    page.fill("#prompt textarea", "What is in this image?")
    page.click("#send")
    _wait_status(page, "Answered")
    assert "A coastal scene" in page.inner_text("#chatbot")

    page.click("#task-detection_hbb")
    page.wait_for_function("document.querySelector('#parsed').innerText.includes('storage tank')")
    _wait_status(page, "Answered")
    parsed = page.inner_text("#parsed")
    assert "ship" in parsed and "plane" in parsed and "-7" in parsed  # lon/lat of the Landsat scene

    canvas = page.locator("#annotator canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.30, box["y"] + box["height"] * 0.30)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.60, steps=8)
    page.mouse.up()
    _wait_status(page, "Region set")
    page.click("#task-region_caption")
    page.wait_for_function("document.querySelector('#chatbot').innerText.includes('of the region')")
    _wait_status(page, "Answered")
    _shot(page, shots / "app-chat.png")

    page.get_by_role("tab", name="Map").click()
    page.click("#map-refresh")
    _wait_status(page, "Map drawn")
    frame = page.frame_locator("#map iframe")
    frame.locator(".leaflet-overlay-pane svg path").first.wait_for(timeout=20000)
    assert frame.locator(".leaflet-overlay-pane svg path").count() == 3
    assert frame.locator(".leaflet-image-layer").count() == 1
    page.wait_for_timeout(500)
    _shot(page, shots / "app-map.png")

    page.get_by_role("tab", name="Export & session").click()
    page.click("#export-geojson")
    _wait_status(page, "Exported")
    link = page.locator("#download a").first
    link.wait_for(timeout=20000)
    response = page.request.get(link.get_attribute("href"))
    data = json.loads(response.body())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 3
    for feature in data["features"]:
        ring = feature["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and all(-80 < lon < -76 and 23 < lat < 26 for lon, lat in ring)
        assert feature["properties"]["model"] == "scripted" and feature["properties"]["turn"] == 2
    _shot(page, shots / "app-export.png")
    assert outside == [], f"the page reached outside localhost: {outside[:5]}"
    page.close()


def test_map_drawn_before_its_frame_has_a_size_fits_when_shown(browser: object) -> None:
    """A map laid out in a frame with no size yet (a hidden tab, a sandboxed frame its process has not
    sized) fits the image once the frame is shown: the box is drawn, not a degenerate path at zoom 0."""
    from app.maps import build_map, map_iframe

    ring = [[50, 20], [150, 20], [150, 80], [50, 80], [50, 20]]
    ship = {"type": "Feature", "properties": {"class": "ship", "box": "[250, 200, 750, 800]", "turn": 1},
            "geometry": {"type": "Polygon", "coordinates": [ring]}}
    html = build_map(np.zeros((100, 200, 3), np.uint8), {"type": "FeatureCollection", "features": [ship]},
                     raster_size=(200, 100))
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    page.set_content(f'<div id="tab" style="display:none">{map_iframe(html)}</div>')
    path = page.frame_locator("iframe").locator(".leaflet-overlay-pane svg path").first
    path.wait_for(state="attached")
    page.evaluate("document.getElementById('tab').style.display = 'block'")
    path.wait_for(timeout=10000)
    drawn = path.bounding_box()
    assert drawn["width"] > 200 and drawn["height"] > 100, drawn  # 100×60 px at the fitted zoom 2
    page.close()


def test_tabs_keep_their_own_sessions(browser: object, server: str, shots: Path) -> None:
    outside: list[str] = []
    first, second = _open(browser, server, outside), _open(browser, server, outside)
    first.click("#open-demo")
    _wait_status(first, "Opened")
    assert "RGB.byte.tif" in first.inner_text("#info")
    assert "No image loaded" in second.inner_text("#info")
    second.fill("#prompt textarea", "hello")
    second.click("#send")
    _wait_status(second, "⚠")
    assert "no image loaded" in second.input_value("#status textarea")
    first.get_by_role("tab", name="Whole scene").click()
    first.click("#scene-run")
    _wait_status(first, "Whole-scene detection done", timeout=60000)
    assert "objects" in first.inner_text("#counts")
    _shot(first, shots / "app-scene.png")
    assert outside == []
    first.close()
    second.close()
