"""Shared test settings: offline, quiet, and the location of the real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def nano_base() -> Path:
    """The bundled offline base of the ``nano`` preset, converted once into the cache
    (``$EARTHGPT_CACHE`` or ``~/.cache/earthgpt``; about a minute on a fresh machine)."""
    from earthgpt.model import base_cache

    return base_cache.prepare_nano_base(progress=False)
