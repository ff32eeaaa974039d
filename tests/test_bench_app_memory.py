"""The memory benchmark (bench/bench_app_memory.py) in small: its generated scene, its reading of the
whole-scene status line, and its phases against the app served in this process with a scripted
model (the peaks are this process's). Memory itself is not asserted here: the script reports it."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser_support import ScriptedChat, running_app

pytest.importorskip("gradio_client")
ROOT = Path(__file__).resolve().parents[1]


def _script(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


memory = _script("bench_app_memory", ROOT / "bench" / "bench_app_memory.py")


class SlowChat(ScriptedChat):
    """The scripted model, a fraction of a second per answer: a whole-scene run long enough to cancel."""

    def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False, **options: object):
        time.sleep(0.3)
        return super().ask(text, max_new_tokens, stream, **options)


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    with running_app(lambda sensor: SlowChat(), "slow") as url:
        yield url


def test_the_scene_is_tiled_and_mirrors_the_demo_texture(tmp_path: Path) -> None:
    import rasterio

    path = memory.make_scene(tmp_path / "scene.tif", size=1024, crop=100)
    with rasterio.open(path) as src:
        assert (src.width, src.height, src.count, src.dtypes[0]) == (1024, 1024, 3, "uint8")
        assert src.block_shapes[0] == (512, 512) and src.compression.value == "DEFLATE" and src.crs
        pixels = src.read()
    assert np.array_equal(pixels[:, :, 100:200], pixels[:, :, 99::-1])  # mirrored at the crop's edge
    assert np.array_equal(pixels[:, :200, :200], pixels[:, 200:400, 200:400])  # period of two crops
    assert pixels.std() > 10  # the demo's texture, not a flat fill


@pytest.mark.parametrize(("status", "expected"), [
    ("Whole scene: window 1 of 361…", (0, 361)),
    ("Whole scene: window 5 of 361…", (4, 361)),
    ("Whole-scene detection cancelled after 4 of 361 windows: 7 objects kept.", (4, 361)),
    ("Whole-scene detection done: 3 objects in 9 windows.", (9, 9)),
    ("", (0, 0)),
])
def test_progress_reads_the_status_line(status: str, expected: tuple[int, int]) -> None:
    assert memory.progress(status) == expected


def test_the_phases_run_against_the_app_and_cancel_the_scene(app_url: str, tmp_path: Path) -> None:
    scene = memory.make_scene(tmp_path / "scene.tif", size=1024)
    report = memory.measure_app(app_url, os.getpid(), scene, settle_s=0.1, windows=2, scene_s=60,
                                downloads=tmp_path)
    assert report["open_scene"]["status"].startswith("Opened scene.tif")
    assert report["chat_turn"]["answer_chars"] > 0
    run = report["scene_detection"]
    assert run["cancelled"] and 2 <= run["windows_done"] < run["windows_total"] == 9
    assert run["status"].startswith("Whole-scene detection cancelled")
    assert run["rss_by_windows_done"][0][0] == 0 and run["rss_by_windows_done"][-1][0] >= 2
    for name in ("idle", "open_scene", "chat_turn", "scene_detection"):
        assert report[name]["peak_mb"] >= report[name]["rss_before_mb"] * 0.99 > 0
    verdict = memory.verdict(report, idle_mb=1e6, busy_mb=0)
    assert verdict["idle_ok"] and not verdict["busy_ok"]
    assert "MISSED" in memory.table(report | {"verdict": verdict})
