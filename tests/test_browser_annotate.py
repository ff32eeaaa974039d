"""The annotation loop in headless Chromium: the analyst accepts one detection, deletes one,
relabels one, draws a rotated box of their own, and exports GeoJSON (with provenance) and MMRS
training records. Real clicks and drags; the scripted model answers ship, storage tank and plane.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from browser_support import detect_on_demo_with_nano, open_page, shot, wait_status

pytestmark = pytest.mark.browser


def _pick_row(page: object, text: str) -> None:
    page.locator("#review-table").evaluate("e => e.scrollIntoView({block: 'center'})")
    page.locator("#review-table [role=gridcell]").filter(has_text=text).first.click()
    page.wait_for_function(
        "t => document.querySelector('#review-label textarea').value === t", arg=text)


def _download(page: object, component: str) -> bytes:
    link = page.locator(f"{component} a").first
    link.wait_for(timeout=20000)
    return page.request.get(link.get_attribute("href")).body()


def _rows(page: object) -> list[list[str]]:
    return page.evaluate("""() => [...document.querySelectorAll('#review-table .virtual-row')]
        .map(r => [...r.querySelectorAll('[role=gridcell]')].map(c => c.innerText.trim()))""")


def _draw_own_box(page: object, label: str, angle: float) -> None:
    """Draw a box in the editor with the annotator's own create tool, give it a class and an
    angle, and add it."""
    editor = page.locator("#review-annotator")
    editor.get_by_role("button", name="Create box").click()
    box = editor.locator("canvas").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.62, box["y"] + box["height"] * 0.62)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.80, box["y"] + box["height"] * 0.74, steps=8)
    page.mouse.up()
    page.wait_for_function("document.querySelector('#review-box textarea').value.startsWith('[')")
    page.fill("#review-label textarea", label)
    page.fill("#review-angle input", str(angle))
    page.click("#review-add")


def _image_point(page: object, fx: float, fy: float) -> tuple[float, float]:
    """Page coordinates of a point of the editor's image (fractions of its width and height): the
    annotator fits the image in its canvas, centred."""
    canvas = page.locator("#review-annotator canvas").first.bounding_box()
    width, height = page.evaluate("() => { const c = document.querySelector('#review-annotator canvas');"
                                  " return [c.clientWidth, c.clientHeight]; }")
    image_w, image_h = 791, 718  # the Landsat demo window
    scale = min(width / image_w, height / image_h)
    left = canvas["x"] + (width - image_w * scale) / 2
    top = canvas["y"] + (height - image_h * scale) / 2
    return left + fx * image_w * scale, top + fy * image_h * scale


def _drag_picked_box(page: object, grid: str, dx: float) -> None:
    """Drag the editor's box (the picked annotation, ``grid`` on the window) right by ``dx`` of the
    image's width; the grid box in the form follows."""
    page.wait_for_function("g => document.querySelector('#review-box textarea').value === g", arg=grid)
    x1, y1, x2, y2 = (int(v) / 1000 for v in grid.strip("[]").split(","))
    page.locator("#review-annotator").scroll_into_view_if_needed()
    x, y = _image_point(page, (x1 + x2) / 2, (y1 + y2) / 2)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + (_image_point(page, dx, 0)[0] - _image_point(page, 0, 0)[0]), y, steps=8)
    page.mouse.up()
    page.wait_for_function("g => document.querySelector('#review-box textarea').value !== g", arg=grid)


def _exported_classes(page: object) -> list[str]:
    """Export MMRS; the classes of the one record's HBB detection answer."""
    page.click("#export-mmrs")
    wait_status(page, "Exported")
    with zipfile.ZipFile(io.BytesIO(_download(page, "#mmrs-download"))) as packed:
        (name,) = [n for n in packed.namelist() if n.endswith("records.jsonl")]
        (record,) = [json.loads(line) for line in packed.read(name).decode().splitlines()]
    answer = next(m["value"] for m in record["conversations"]
                  if m["task"] == "detection_hbb" and m["from"] == "assistant")
    return [line.split(" [")[0] for line in answer.splitlines()]


def test_review_accept_delete_relabel_draw_and_export(browser: object, server: str, shots: Path) -> None:
    outside: list[str] = []
    page = open_page(browser, server, outside)
    page.click("#open-demo")
    wait_status(page, "Opened")
    page.click("#task-detection_hbb")
    wait_status(page, "Answered")

    page.get_by_role("tab", name="Review").click()
    page.wait_for_function("document.querySelector('#review-summary').innerText.includes('3 annotations')")
    _pick_row(page, "ship")
    page.click("#review-accept")
    wait_status(page, "Accepted #1")
    _pick_row(page, "plane")
    page.click("#review-delete")
    wait_status(page, "Deleted #3")
    _pick_row(page, "storage tank")
    page.fill("#review-label textarea", "oil tank")
    page.click("#review-apply")
    wait_status(page, "Updated #2")
    _drag_picked_box(page, "[520, 540, 600, 620]", 0.05)  # the picked #2, dragged right in the editor
    page.click("#review-apply")
    wait_status(page, "Updated #2")

    _draw_own_box(page, "car", 30)
    wait_status(page, "Added #3")

    rows = _rows(page)
    assert [row[1:3] for row in rows] == [["accepted", "ship"], ["accepted", "oil tank"], ["accepted", "car"]]
    assert rows[2][4] == "obb" and rows[2][6] == "30" and rows[2][7] == "analyst"
    assert rows[1][7].endswith("edited")
    x1, _, x2, _ = (int(v) for v in rows[1][5].strip("[]").split(","))
    assert 560 <= x1 <= 580 and 640 <= x2 <= 660  # moved about 50 grid cells to the right
    shot(page, shots / "app-review.png")

    assert _exported_classes(page) == ["ship", "oil tank", "car"]

    page.get_by_role("tab", name="Export & session").click()
    page.click("#export-geojson")
    wait_status(page, "Exported")
    features = json.loads(_download(page, "#download"))["features"]
    assert [(f["properties"]["class"], f["properties"]["source_kind"], f["properties"]["status"])
            for f in features] == [("ship", "model", "accepted"), ("oil tank", "model", "accepted"),
                                   ("car", "analyst", "accepted")]
    assert not outside


def _wait_review_summary(page: object, found: int) -> None:
    """Wait until the Review tab's summary counts ``found`` annotations. Once, in a full CI run on
    2026-12-05, it did not within 30 s (the whole test passed alone 3 times of 3, in 31 s each), most
    likely the tab's refresh queued behind other events on a loaded machine; so the wait is 2
    minutes, and a timeout says what the summary and the info line read instead."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            "n => (document.querySelector('#review-summary')?.innerText || '').startsWith(n + ' ')",
            arg=str(found), timeout=120000)
    except PlaywrightTimeout as err:
        summary, info = page.inner_text("#review-summary"), page.inner_text("#info")
        raise AssertionError(f"the review summary never counted {found}: {summary!r}; info {info!r}") from err


def test_default_model_review_and_training_export(browser: object, nano_server: str, shots: Path) -> None:
    """With the default model: whatever usable boxes it finds are accepted, the analyst adds one,
    and the MMRS export lists them all."""
    outside: list[str] = []
    page = open_page(browser, nano_server, outside)
    found = detect_on_demo_with_nano(page)
    page.get_by_role("tab", name="Review").click()
    if found:
        _wait_review_summary(page, found)
        page.click("#review-accept-all")
        wait_status(page, "Accepted")
    _draw_own_box(page, "car", 0)
    wait_status(page, f"Added #{found + 1}")
    shot(page, shots / "app-review-nano.png")
    classes = _exported_classes(page)
    page.get_by_role("tab", name="Export & session").click()
    page.click("#export-geojson")
    wait_status(page, "Exported")
    features = [f["properties"] for f in json.loads(_download(page, "#download"))["features"]]
    assert classes == [p["class"] for p in features if p["status"] == "accepted"] and classes[-1] == "car"
    assert "unexpected error" not in page.input_value("#status textarea")
    assert not outside
