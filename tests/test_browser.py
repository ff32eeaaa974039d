"""The app in headless Chromium: load a demo tile, chat, draw a region, detect, map, export.

The server runs in a thread on a free localhost port with a scripted model (fixed answers, so
the boxes drawn and exported are known). Every request the page makes must stay on localhost.
Set ``EARTHGPT_SCREENSHOTS=docs`` to write the screenshots into ``docs/`` (else a temp folder).
Without Chromium or Playwright the tests skip, or fail when ``EARTHGPT_REQUIRE_BROWSER=1`` (CI).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from browser_support import drag, open_page, settled_canvas, shot, wait_status

pytestmark = pytest.mark.browser


def test_analyst_session_end_to_end(browser: object, server: str, shots: Path) -> None:
    outside: list[str] = []
    page = open_page(browser, server, outside)
    page.click("#open-demo")
    wait_status(page, "Opened")
    assert "EPSG:32618" in page.inner_text("#info")

    page.fill("#prompt textarea", "What is in this image?")
    page.click("#send")
    wait_status(page, "Answered")
    assert "A coastal scene" in page.inner_text("#chatbot")

    page.click("#task-detection_hbb")
    page.wait_for_function("document.querySelector('#parsed').innerText.includes('storage tank')")
    wait_status(page, "Answered")
    parsed = page.inner_text("#parsed")
    assert "ship" in parsed and "plane" in parsed and "-7" in parsed  # lon/lat of the Landsat scene

    page.locator("#annotator canvas").first.scroll_into_view_if_needed()
    drag(page, settled_canvas(page), (0.30, 0.30), (0.55, 0.60))  # once page.js has fitted the image
    wait_status(page, "Region set")
    page.click("#task-region_caption")
    page.wait_for_function("document.querySelector('#chatbot').innerText.includes('of the region')")
    wait_status(page, "Answered")
    shot(page, shots / "app-chat.png")

    page.get_by_role("tab", name="Map").click()
    page.click("#map-refresh")
    wait_status(page, "Map drawn")
    frame = page.frame_locator("#map iframe")
    frame.locator(".leaflet-overlay-pane svg path").first.wait_for(timeout=20000)
    assert frame.locator(".leaflet-overlay-pane svg path").count() == 3
    assert frame.locator(".leaflet-image-layer").count() == 1
    page.wait_for_timeout(500)
    shot(page, shots / "app-map.png")

    page.get_by_role("tab", name="Export & session").click()
    page.click("#export-geojson")
    wait_status(page, "Exported")
    link = page.locator("#download a").first
    link.wait_for(timeout=20000)
    response = page.request.get(link.get_attribute("href"))
    data = json.loads(response.body())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 3
    for feature in data["features"]:
        ring = feature["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and all(-80 < lon < -76 and 23 < lat < 26 for lon, lat in ring)
        assert feature["properties"]["model"] == "scripted" and feature["properties"]["turn"] == 2
    shot(page, shots / "app-export.png")
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
    first, second = open_page(browser, server, outside), open_page(browser, server, outside)
    first.click("#open-demo")
    wait_status(first, "Opened")
    assert "RGB.byte.tif" in first.inner_text("#info")
    assert "No image loaded" in second.inner_text("#info")
    second.fill("#prompt textarea", "hello")
    second.click("#send")
    wait_status(second, "⚠")
    assert "no image loaded" in second.input_value("#status textarea")
    first.get_by_role("tab", name="Whole scene").click()
    first.click("#scene-run")
    wait_status(first, "Whole-scene detection done", timeout=60000)
    assert "objects" in first.inner_text("#counts")
    shot(first, shots / "app-scene.png")
    assert outside == []
    first.close()
    second.close()
