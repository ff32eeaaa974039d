"""Whole-scene detection that reports in its own tab and cancels keeping what is done, and a saved
session reopened after its image moved, in headless Chromium with real clicks (scripted model)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_support import ScriptedChat, open_page, running_app, save_session_file, shot, wait_status

pytestmark = pytest.mark.browser


class PacedChat(ScriptedChat):
    """The scripted model at a pace a person can follow: half a second per detection answer; its
    other answers say how many earlier exchanges it was given back (``restore``)."""

    def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False, **options: object):
        if "Detect all objects" in text:
            time.sleep(0.5)
            return super().ask(text, max_new_tokens, stream, **options)
        answer = f"I recall {len(getattr(self, 'restored', []))} earlier exchange(s)."
        return iter([answer]) if stream else answer


@pytest.fixture(scope="module")
def paced_server() -> Iterator[str]:
    with running_app(lambda sensor: PacedChat(), "paced") as url:
        yield url


def _status(page: object) -> str:
    return page.input_value("#status textarea")


def test_progress_in_its_tab_from_the_first_window_and_cancel_keeps_what_is_done(
    browser: object, paced_server: str, shots: Path
) -> None:
    page = open_page(browser, paced_server, [])
    page.click("#open-demo")
    wait_status(page, "Opened RGB.byte.tif")
    page.get_by_role("tab", name="Whole scene").click()
    page.fill("#scene-tile input", "256")  # 12 windows of the 791 × 718 Landsat tile
    page.fill("#scene-overlap input", "0")
    page.click("#scene-run")
    page.wait_for_function("() => document.querySelector('#scene-progress')?.innerText"
                           ".includes('Window 1 of 12: answering')", timeout=10000)
    assert page.is_visible("#scene-progress progress") and _status(page) == "Whole scene: window 1 of 12…"
    assert page.locator("#sidebar .eta-bar, #views .eta-bar").count() == 0  # nothing drawn over other panels
    page.wait_for_function("() => document.querySelector('#scene-progress').innerText"
                           ".includes('Window 3 of 12')", timeout=20000)
    shot(page, shots / "scene-progress.png")
    page.click("#scene-cancel")
    wait_status(page, "Whole-scene detection cancelled after", timeout=20000)
    done = int(_status(page).split("after ")[1].split(" of")[0])
    assert 3 <= done < 12  # the window being answered when Cancel came is cut and counts as done
    assert f"Cancelled after {done} of 12 windows" in page.inner_text("#scene-progress")
    counts = page.inner_text("#counts")
    assert f"in {done} of 12 windows" in counts and "ship" in counts
    kept = int(counts.split(" objects")[0])
    assert kept > 0 and f"Detections: {kept}" in page.inner_text("#info")
    shot(page, shots / "scene-cancelled.png")
    page.close()


def _scene_tab(browser: object, server: str) -> object:
    page = open_page(browser, server, [])
    page.click("#open-demo")
    wait_status(page, "Opened RGB.byte.tif")
    page.get_by_role("tab", name="Whole scene").click()
    page.fill("#scene-tile input", "256")
    page.fill("#scene-overlap input", "0")
    return page


QUEUE_LINE_PLACE = """() => {
    const line = document.querySelector('#status .progress-text');
    if (!line || !line.innerText.startsWith('queue: 1/1')) return null;
    const box = line.getBoundingClientRect(), status = document.querySelector('#status');
    if (box.height === 0) return null;
    return {bottom: box.bottom, status_bottom: status.getBoundingClientRect().bottom};
}"""


def test_a_run_waiting_behind_another_shows_its_place_in_the_queue(
    browser: object, paced_server: str, shots: Path
) -> None:
    first, second = _scene_tab(browser, paced_server), _scene_tab(browser, paced_server)
    first.click("#scene-run")
    first.wait_for_function("() => document.querySelector('#scene-progress')?.innerText"
                            ".includes('Window 1 of 12')", timeout=10000)
    second.click("#scene-run")  # one worker: it waits for the first run
    # Gradio re-renders the queue line on every queue update, so its place is measured in the same
    # breath as its text (two separate reads can fall either side of a re-render and find nothing).
    placed = second.wait_for_function(QUEUE_LINE_PLACE, timeout=10000).json_value()
    assert placed["bottom"] <= placed["status_bottom"] + 0.5, placed  # inside the status line, not clipped
    for page in (first, second):  # nothing drawn over the other panels
        assert page.locator("#sidebar .eta-bar, #views .eta-bar").count() == 0
    shot(second, shots / "scene-queued.png")
    first.click("#scene-cancel")
    wait_status(second, "Whole scene: window", timeout=20000)  # its turn: its own progress from the start
    second.click("#scene-cancel")
    wait_status(second, "Whole-scene detection cancelled after", timeout=20000)
    first.close()
    second.close()


def test_reopen_a_saved_session_after_its_image_moved(
    browser: object, paced_server: str, shots: Path, shared_data: Path, tmp_path: Path,
    app_image_store: Path
) -> None:
    original = tmp_path / "harbour.tif"
    shutil.copy(shared_data / "geotiff" / "optical" / "RGB.byte.tif", original)
    page = open_page(browser, paced_server, [])
    page.locator("#upload input[type=file]").set_input_files(str(original))
    wait_status(page, "Opened harbour.tif")
    page.fill("#prompt textarea", "What is this?")
    page.click("#send")
    wait_status(page, "Answered")
    saved = save_session_file(page, tmp_path, "harbour.session.json")
    for kept in app_image_store.iterdir():  # the server lost its copy, and the image moved
        shutil.rmtree(kept)
    moved = tmp_path / "moved" / "harbour.tif"
    moved.parent.mkdir()
    original.rename(moved)
    page.locator("#session-file input[type=file]").set_input_files(str(saved))
    wait_status(page, "⚠ the session's image harbour.tif is no longer where")
    assert str(tmp_path) not in _status(page) and "/tmp" not in _status(page)
    page.locator("#repoint input[type=file]").set_input_files(str(moved))
    wait_status(page, "Session reopened with the image picked.")
    assert "What is this?" in page.inner_text("#chatbot")
    page.get_by_role("tab", name="Chat").click()
    page.fill("#prompt textarea", "And now?")
    page.click("#send")
    wait_status(page, "Answered")
    assert "I recall 1 earlier exchange(s)." in page.inner_text("#chatbot")
    shot(page, shots / "session-repointed.png")
    page.close()


def test_default_model_scene_run_reports_cancels_and_the_session_reopens(
    browser: object, nano_server: str, shots: Path, tmp_path: Path
) -> None:
    """The shipped model: the counts say why its long answers were cut (the stop rule ended a loop,
    or the answer reached the length limit: v2 writes long lists of distinct boxes), progress shows
    from the first batch of windows (answered together) and moves after each, a cancel keeps what
    is done, and a saved session reopens with the model's conversation."""
    page = open_page(browser, nano_server, [])
    page.click("#open-demo")
    wait_status(page, "Opened RGB.byte.tif", timeout=60000)
    page.get_by_role("tab", name="Whole scene").click()
    page.fill("#scene-tile input", "128")  # 42 windows: three batches of 14
    page.fill("#scene-overlap input", "0")
    page.click("#scene-run")
    # the first progress line comes before any window is answered; 60 s, not 10, since the shipped
    # model's server shares the CPU with the rest of the suite (a 10 s wait timed out once in CI)
    page.wait_for_function("() => /Windows 1–14 of 42: answering/.test("
                           "document.querySelector('#scene-progress')?.innerText)", timeout=60000)
    page.wait_for_function("() => document.querySelector('#scene-progress').innerText"
                           ".includes('Windows 15–28 of 42')", timeout=240000)
    page.click("#scene-cancel")
    wait_status(page, "Whole-scene detection cancelled after", timeout=120000)
    assert "Cancelled after" in page.inner_text("#scene-progress")
    counts = page.inner_text("#counts")
    assert ("stopped early because the model started repeating itself" in counts
            or "stopped at the answer length limit" in counts), counts
    shot(page, shots / "scene-default-model.png")
    page.get_by_role("tab", name="Chat").click()
    page.fill("#prompt textarea", "What is this?")
    page.click("#send")
    wait_status(page, "Answered", timeout=120000)
    saved = save_session_file(page, tmp_path, "RGB.byte.session.json")
    page.locator("#session-file input[type=file]").set_input_files(str(saved))
    wait_status(page, "Session reopened.", timeout=60000)
    page.get_by_role("tab", name="Chat").click()
    page.fill("#prompt textarea", "Describe it in more detail.")
    page.click("#send")
    wait_status(page, "Answered", timeout=120000)
    assert page.inner_text("#chatbot").count("What is this?") == 1
    page.close()
