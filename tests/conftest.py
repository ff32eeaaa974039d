"""Shared test settings: offline, quiet, and the location of the real data."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_support import CHROMIUM, LAUNCH_ARGS, ScriptedChat, nano_engine, running_app, unavailable

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _shared_data_dir() -> Path:
    env = os.environ.get("EARTHGPT_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` each test that needs the real offline base (:func:`nano_base`, directly or through
    another fixture): that is what ``slow`` means (see the markers in pyproject.toml)."""
    for item in items:
        if "nano_base" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (``$EARTHGPT_DATA`` or ``../shared/data``); skips when it is missing."""
    path = _shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set EARTHGPT_DATA to the shared/data folder)")
    return path


@pytest.fixture(scope="session")
def shared_mmrs(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """The MMRS set built from the real data (``earthgpt mmrs build --all-shared``), once a session."""
    out = tmp_path_factory.mktemp("shared_mmrs")
    subprocess.run(
        [sys.executable, "-m", "earthgpt", "mmrs", "build", "--all-shared", str(shared_data),
         "--out", str(out), "--no-progress"],
        check=True, capture_output=True, env={**os.environ, "EARTHGPT_DATA": str(shared_data)},
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session", autouse=True)
def app_image_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The app's store of saved sessions' images (app/image_store.py) in a temporary folder, never
    the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("app-images")
        patch.setenv("EARTHGPT_APP_IMAGES", str(folder))
        yield folder


@pytest.fixture(scope="session")
def nano_base() -> Path:
    """The bundled offline base of the ``nano`` preset, converted once into the cache
    (``$EARTHGPT_CACHE`` or ``~/.cache/earthgpt``; about a minute on a fresh machine)."""
    from earthgpt.model import base_cache

    return base_cache.prepare_nano_base(progress=False)


# ----------------------------------------------------------------------------- browser tests
# The app on a free localhost port with the scripted model, and headless Chromium (browser_support.py).

@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with running_app(lambda sensor: ScriptedChat(), "scripted") as url:
        yield url


@pytest.fixture(scope="module")
def nano_server(nano_base: Path) -> Iterator[str]:
    """The app with the default model, loaded as ``python app.py`` loads it (its tests are slow)."""
    with running_app(engine=nano_engine()) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium) so the browser tests cannot run")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright for Python is not installed")
    with sync_playwright() as play:
        chromium = play.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = os.environ.get("EARTHGPT_SCREENSHOTS")
    return Path(folder) if folder else tmp_path
