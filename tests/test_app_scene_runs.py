"""Whole-scene runs that report each window and can be cancelled keeping what is done: the library's
iterator, the app's steps and cancel registry, and the CLI's Ctrl-C and repetition stop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_app_scene import TileChat, _args, _scene

from app import handlers as H
from app.scene import SceneRuns, progress_html, scene_steps
from app.session_io import Session
from earthgpt.answer_stream import LineGate
from earthgpt.commands import detect as detect_cmd
from earthgpt.raster import tile_grid
from earthgpt.scene_detection import iter_detect_scene

LOOP = "ship [100, 100, 200, 200]\n" + "ship [161, 161, 161, 161]\n" * 200


class LoopingChat(TileChat):
    """Repeats a box until the limit unless a stop rule ends it, as the default model does; streams
    line by line through the rule like ChatSession, and counts the lines it wrote."""

    written = 0

    def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False, stop_rule=None):
        gate = LineGate(stop_rule)
        self.finish_reason = "length"
        for line in LOOP.splitlines(keepends=True):
            LoopingChat.written += 1
            piece = gate.push(line)
            if piece:
                yield piece
            if gate.refused:
                self.finish_reason = "rule"
                return


def _session(tmp_path: Path) -> Session:
    return H.load_image(Session(), _scene(tmp_path))


def test_progress_comes_before_the_first_window_and_after_each(tmp_path: Path) -> None:
    engine = H.Engine("scripted", lambda sensor: TileChat())
    steps = scene_steps(_session(tmp_path), engine, tile=200, overlap=40)
    first, result = next(steps)
    assert result.tiles_done == 0 and result.tiles == 6 and first.found == []
    assert "Window 1 of 6: answering" in progress_html(result)
    done = [result.tiles_done for _, result in steps]
    assert done == [1, 2, 3, 4, 5, 6]
    assert "Done: 6 windows" in progress_html(result)


def test_cancel_keeps_the_windows_done(tmp_path: Path) -> None:
    engine = H.Engine("scripted", lambda sensor: TileChat())
    runs = SceneRuns()
    assert not runs.cancel("tab-1")  # nothing running
    cancelled = runs.start("tab-1")
    session = _session(tmp_path)
    steps = []
    for new, result in scene_steps(session, engine, tile=200, overlap=40, cancelled=cancelled):
        steps.append((new, result.tiles_done, result.cancelled))
        if result.tiles_done == 2:
            assert runs.cancel("tab-1")
    runs.finish("tab-1")
    assert not runs.cancel("tab-1")
    last, done, was_cancelled = steps[-1]
    assert done == 2 and was_cancelled and len(steps) == 4
    assert last.found and all(f.source == "scene" for f in last.found)
    assert [f.detection for f in last.found] == [f.detection for f in steps[-2][0].found]
    assert "Cancelled after 2 of 6 windows" in progress_html(result)


def test_cancel_cuts_the_window_being_answered() -> None:
    """The library's iterator: a cancel during a window's answer keeps the lines written so far."""
    tiles = tile_grid(300, 100, tile=100, overlap=0)
    flag: list[bool] = []

    def answer(images: list[np.ndarray]) -> list[str]:
        flag.append(True)  # the analyst cancels while the first window is being answered
        return ["ship [0, 0, 500, 500]"] * len(images)

    results = list(iter_detect_scene(tiles, lambda t: np.zeros((100, 100, 3), np.uint8), answer,
                                     raster_size=(300, 100), batch=1, cancelled=lambda: bool(flag)))
    final = results[-1]
    assert final.cancelled and final.tiles_done == 1 and len(final.detections) == 1


def test_a_batch_of_windows_shows_as_a_range_and_a_cancel_in_the_last_batch_says_so(tmp_path: Path) -> None:
    """Windows answered together show as "Windows 1–3 of 6"; a cancel that cuts the last batch's
    answers ends the run as cancelled, not done (there is no next batch to stop before)."""
    runs = SceneRuns()
    asked: list[int] = []

    class CancelledInTheLastBatch(TileChat):
        def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False, **options: object) -> str:
            asked.append(1)
            if len(asked) == 5:  # the analyst cancels while windows 4–6 are being answered
                runs.cancel("tab-1")
            return super().ask(text, max_new_tokens, stream, **options)

    engine = H.Engine("scripted", lambda sensor: CancelledInTheLastBatch(), scene_batch_size=3)
    cancelled = runs.start("tab-1")
    lines = []
    for _, result in scene_steps(_session(tmp_path), engine, tile=200, overlap=40, cancelled=cancelled):
        lines.append(progress_html(result))
    assert "Windows 1–3 of 6: answering" in lines[0] and "Windows 4–6 of 6: answering" in lines[1]
    assert result.cancelled and result.tiles_done == 6 and result.answering == 0
    assert "Cancelled after 6 of 6 windows" in lines[-1]


def test_repeating_answers_stop_early_and_are_reported(tmp_path: Path) -> None:
    LoopingChat.written = 0
    engine = H.Engine("scripted", lambda sensor: LoopingChat())
    *_, (session, result) = scene_steps(_session(tmp_path), engine, tile=200, overlap=40)
    assert result.answers_stopped == 6 and LoopingChat.written == 6 * 3
    assert "6 of 6 window answers were stopped early" in result.stop_note()
    assert result.answers_at_limit == 0 and result.invalid_note().startswith("6 boxes left out")
    assert len(session.found) == len(result.detections) > 0


def test_cli_stops_repeats_unless_told_and_keeps_what_is_done_on_ctrl_c(tmp_path: Path) -> None:
    image = _scene(tmp_path)
    LoopingChat.written = 0
    result, _ = detect_cmd.detect_file(_args(image, tmp_path / "a.geojson"), lambda s: LoopingChat(), "m")
    assert result.answers_stopped == 6 and LoopingChat.written == 18
    LoopingChat.written = 0
    result, _ = detect_cmd.detect_file(_args(image, tmp_path / "b.geojson", **{"keep-repeats": True}),
                                       lambda s: LoopingChat(), "m")
    assert result.answers_stopped == 0 and LoopingChat.written == 6 * len(LOOP.splitlines())

    class Interrupted(TileChat):
        calls = 0

        def set_image(self, rgb: np.ndarray) -> None:
            Interrupted.calls += 1
            if Interrupted.calls == 5:  # Ctrl-C in the second batch of three windows
                raise KeyboardInterrupt

    result, _ = detect_cmd.detect_file(_args(image, tmp_path / "c.geojson"), lambda s: Interrupted(), "m")
    assert result.cancelled and result.tiles_done == 3
    written = json.loads((tmp_path / "c.geojson").read_text())["features"]
    assert len(written) == len(result.detections) > 0


@pytest.mark.parametrize("done", [0, 3])
def test_progress_html_says_how_far(done: int) -> None:
    from earthgpt.scene_detection import SceneResult

    result = SceneResult(detections=[], tiles=6, tiles_done=done)
    text = progress_html(result, seconds=30.0)
    assert f'value="{done}" max="6"' in text and f"Window {done + 1} of 6" in text
    assert ("10 s per window" in text) == bool(done)


def test_chat_detection_stops_at_the_repetition_too(tmp_path: Path) -> None:
    from test_app_handlers import run

    engine = H.Engine("scripted", lambda sensor: LoopingChat(), max_new_tokens=10_000)
    session = run(H.quick_task(_session(tmp_path), engine, "detection_hbb"))
    assert session.turns[-1].answer == "ship [100, 100, 200, 200]\nship [161, 161, 161, 161]\n"
    assert len(session.found) == 1  # the empty box is reported as not usable, never kept
    asked = run(H.ask(session, engine, "List everything you see."))  # a free question: no stop rule
    assert asked.turns[-1].answer == LOOP
