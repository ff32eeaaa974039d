"""The load script (bench/load_app.py) in small: two analysts at once for a few seconds against the app
as ``python app.py`` serves it (one worker), with a scripted model that echoes each question, so an
answer given to the wrong session would carry the other analyst's marker; and its checks, shown to
catch what they look for. Speed is not asserted here: the script itself reports it."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import ScriptedChat, free_port

from app.handlers import Engine

pytest.importorskip("gradio_client")
ROOT = Path(__file__).resolve().parents[1]


def _script(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


load = _script("load_app", ROOT / "bench" / "load_app.py")


class EchoChat(ScriptedChat):
    """The scripted model; its chat answers repeat the question's last line."""

    def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False, **options: object) -> Any:
        if "Detect all objects" in text:
            return super().ask(text, max_new_tokens, stream, **options)
        answer = f"You asked: {text.splitlines()[-1]}"
        return iter([answer]) if stream else answer


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    """The app as ``python app.py`` serves it (queue of one worker), with :class:`EchoChat`."""
    app_script = _script("app_script", ROOT / "app.py")
    args = app_script.parse_args(["--port", str(free_port())])
    demo = app_script.serve(Engine("scripted", lambda sensor: EchoChat()), args, [], block=False)
    try:
        yield f"http://127.0.0.1:{args.port}"
    finally:
        demo.close()


def test_two_analysts_at_once_see_only_their_own_session(app_url: str, tmp_path: Path) -> None:
    report = load.run_load(app_url, analysts=2, seconds=1, server_pid=os.getpid(), workdir=tmp_path)
    assert report["errors"] == [] and report["cross_talk"] == []
    assert report["cycles"] >= 2  # each analyst finishes its cycle after the deadline
    calls = {action: row["calls"] for action, row in report["actions"].items()}
    assert calls["ask"] == 3 * calls["open_image"] and calls["detect"] == calls["export_geojson"] >= 2
    assert all(row["alone_s"] is not None for row in report["actions"].values())  # the baseline ran
    assert report["queue"]["calls"] == sum(calls.values())
    assert report["rss_mb"]["peak"] >= report["rss_mb"]["baseline"] > 0
    assert report["rss_mb"]["peak_second_half"] > 0 and report["rss_mb"]["peak_first_half"] > 0
    assert report["rss_mb"]["peak_drift"] == pytest.approx(
        report["rss_mb"]["peak_second_half"] - report["rss_mb"]["peak_first_half"], abs=0.11)
    assert report["rss_mb"]["drift"] == pytest.approx(
        report["rss_mb"]["floor_second_half"] - report["rss_mb"]["floor_first_half"], abs=0.11)
    assert report["rss_mb"]["floor_first_half"] <= report["rss_mb"]["peak_first_half"]
    at_peak = report["rss_mb"]["at_peak"]
    assert at_peak["mb"] <= report["rss_mb"]["peak"] and at_peak["t_s"] >= 0
    assert len(report["calls"]) == report["queue"]["calls"]
    assert all(action in load.ACTIONS and 0 <= start <= end for action, start, end in report["calls"])
    assert "cross-talk: 0" in load.table(report)


def test_a_leak_moves_the_floor_and_a_spike_only_the_peak() -> None:
    start = 100.0
    flat = [(start + t, 1000.0) for t in range(40)]
    spike = [(t, 2500.0 if t == start + 10 else mb) for t, mb in flat]
    halves = load._halves(spike, start, 40)
    assert halves["peak_drift"] == -1500.0 and halves["drift"] == 0.0  # the spike is no leak
    leak = [(start + t, 1000.0 + 5 * t) for t in range(40)]
    halves = load._halves(leak, start, 40)
    assert halves["drift"] == pytest.approx(100.0, abs=10)  # 5 MB/s over 20 s
    calls = [
        ("detect", start + 8, start + 12), ("ask", start + 11, start + 13), ("ask", start + 1, start + 2),
    ]
    assert load.in_flight(calls, spike, start) == {"t_s": 10.0, "mb": 2500.0, "calls": {"detect": 1}}


@pytest.fixture
def analyst(tmp_path: Path) -> Any:
    return load.make_analysts(tmp_path, 2)[0]


def test_a_response_with_another_sessions_content_is_cross_talk(analyst: Any) -> None:
    other = "analyst-01-0123abcd"
    load.check_own(analyst, "ask", [[{"role": "user", "content": f"[{analyst.marker}] hi"}], "Answered."])
    with pytest.raises(load.LoadError, match=f"ask showed {other}") as caught:
        load.check_own(analyst, "ask", [[{"role": "assistant", "content": [{"text": f"{other} ok"}]}], "ok"])
    assert caught.value.kind == "cross-talk"
    with pytest.raises(load.LoadError, match="⚠ no image loaded") as caught:
        load.check_own(analyst, "detect", ["", "⚠ no image loaded"])
    assert caught.value.kind == "error"
    with pytest.raises(load.LoadError, match="the info names another image"):
        load.check_info(analyst, "open_image", "**scene.tif** · 10×10 px\n- Detections: 0")
    assert load.check_info(analyst, "detect", f"**{analyst.tile.name}** · 384×384 px\n- Detections: 3") == 3


def test_a_conversation_must_hold_exactly_the_questions_sent(analyst: Any) -> None:
    sent = ["q1", "q2"]
    chat = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
            {"role": "user", "content": [{"type": "text", "text": "q2"}]},
            {"role": "assistant", "content": "a2"}]
    load.check_conversation(analyst, chat, sent)
    with pytest.raises(load.LoadError, match="the conversation holds"):
        load.check_conversation(analyst, [*chat, {"role": "user", "content": "q3"}, chat[-1]], sent)
    with pytest.raises(load.LoadError, match="the last question has no answer"):
        load.check_conversation(analyst, chat[:-1], sent)


def test_an_export_must_hold_this_sessions_detections(analyst: Any, tmp_path: Path) -> None:
    def export(sources: list[str], skipped: int = 0) -> str:
        path = tmp_path / f"{analyst.tile.stem}_detections.geojson"
        features = [{"type": "Feature", "properties": {"source": s}} for s in sources]
        path.write_text(json.dumps({"features": features, "skipped": [{}] * skipped}))
        return str(path)

    load.check_export(analyst, export([analyst.tile.name] * 2, skipped=1), 3)
    with pytest.raises(load.LoadError, match="holds features of"):
        load.check_export(analyst, export([analyst.tile.name, "scene.tif"]), 2)
    with pytest.raises(load.LoadError, match="holds 2 detections, the session found 3"):
        load.check_export(analyst, export([analyst.tile.name] * 2), 3)
