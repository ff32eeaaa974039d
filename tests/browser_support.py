"""What the browser tests share: the scripted model, Chromium's launch, screenshots and waits.

The fixtures that use it (``server``, ``browser``, ``shots``) live in ``conftest.py``.
"""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]
DETECTIONS = ("ship [120, 180, 260, 300]\nstorage tank [520, 540, 600, 620]\n"
              "plane [640, 120, 760, 160, 740, 240, 620, 200]")

class ScriptedChat:
    """Detection prompts get :data:`DETECTIONS`, everything else a short sentence; streamed by word."""

    def set_image(self, rgb: np.ndarray) -> None:
        self.shape = rgb.shape

    def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False, **options: object):
        answer = DETECTIONS if "Detect all objects" in text else f"A coastal scene ({len(text)} characters)."
        pieces = [word + " " for word in answer.split(" ")]
        pieces[-1] = pieces[-1].rstrip()
        return iter(pieces) if stream else "".join(pieces)

    def restore(self, exchanges: list[tuple[str, str]]) -> None:
        self.restored = list(exchanges)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unavailable(reason: str) -> NoReturn:
    """Skip the browser tests, or fail them where they must run (``EARTHGPT_REQUIRE_BROWSER=1``)."""
    if os.environ.get("EARTHGPT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}; EARTHGPT_REQUIRE_BROWSER=1 says the browser tests must run", pytrace=False)
    pytest.skip(reason)


def shot(page: object, path: Path) -> None:
    """A screenshot squeezed to a 128-colour PNG (docs images stay small)."""
    from PIL import Image

    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(300)
    image = Image.open(io.BytesIO(page.screenshot(full_page=False))).convert("RGB")
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def wait_status(page: object, prefix: str, timeout: int = 30000) -> None:
    page.wait_for_function(
        "p => { const t = document.querySelector('#status textarea'); return t && t.value.startsWith(p); }",
        arg=prefix, timeout=timeout)


def open_page(browser: object, server: str, outside: list[str]) -> object:
    page = browser.new_page(viewport={"width": 1440, "height": 1150})
    page.on("request", lambda r: outside.append(r.url)
            if not r.url.startswith((server, "data:", "blob:", "about:")) else None)
    page.goto(server, wait_until="load")
    page.wait_for_selector("#open-demo", timeout=60000)
    return page


@contextmanager
def running_app(
    new_chat: Callable[[Any], Any] | None = None, name: str = "scripted", *, engine: Any = None
) -> Iterator[str]:
    """The app with ``new_chat(sensor)`` as its model (or a ready ``engine``), served on a free
    localhost port: yields its URL."""
    from app.handlers import Engine
    from app.ui import build, theme

    demo = build(engine if engine is not None else Engine(name, new_chat))
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, theme=theme(),
                        footer_links=[], share=False, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        demo.close()


def nano_engine() -> Any:
    """The default model's engine, loaded as ``python app.py`` loads it."""
    import importlib.util

    app_script = Path(__file__).resolve().parents[1] / "app.py"
    spec = importlib.util.spec_from_file_location("app_script", app_script)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script.load_engine("nano")


def detect_on_demo_with_nano(page: Any) -> int:
    """Open the default demo tile, ask the default model for HBB detections, return how many it kept."""
    page.click("#open-demo")
    wait_status(page, "Opened", timeout=120000)
    page.click("#task-detection_hbb")
    wait_status(page, "Answered", timeout=300000)
    return int(page.inner_text("#info").split("Detections: ")[1].split()[0])


def save_session_file(page: Any, folder: Path, name: str) -> Path:
    """Click *Save session*, wait for ``Saved <name>`` and download the file into ``folder``."""
    page.get_by_role("tab", name="Export & session").click()
    page.click("#save-session")
    wait_status(page, f"Saved {name}")
    with page.expect_download() as download:
        page.locator("#download a").first.click()
    saved = folder / name
    download.value.save_as(saved)
    return saved


def drag(page: object, box: dict, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Press at ``start`` and release at ``end``, both fractions of ``box``, as a hand would."""
    page.mouse.move(box["x"] + box["width"] * start[0], box["y"] + box["height"] * start[1])
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * end[0], box["y"] + box["height"] * end[1], steps=8)
    page.mouse.up()


def settled_canvas(page: object) -> dict:
    """The window image's canvas once it has its final size (page.js fits it after it loads)."""
    canvas = page.locator("#annotator canvas").first
    box = None
    for _ in range(20):
        page.wait_for_timeout(150)
        now = canvas.bounding_box()
        if now == box and now["height"] > 50:
            return box
        box = now
    raise AssertionError(f"the window image never settled: {box}")
