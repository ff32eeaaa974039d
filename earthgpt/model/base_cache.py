"""The bundled offline base in the cache folder: converted once, published whole, with a manifest.

:func:`prepare_nano_base` converts the packages that carry the nano preset's base components (see
:mod:`earthgpt.model.convert_bundled`) into ``<cache>/nano-base/{llm,vit,cnn}`` with a
``manifest.json`` (each component's identity and the ``base_id``); the cache is ``$EARTHGPT_CACHE``
or ``~/.cache/earthgpt``. It runs lazily on first use (:func:`bundled_component`) or with
``earthgpt weights prepare``. A build happens under a temporary name and is renamed into place;
leftovers of killed builds are removed by the next one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from tqdm.auto import tqdm

from earthgpt.identity import combine_base_identity, weight_folder_identity

log = logging.getLogger(__name__)

BASE_NAME = "nano-base"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
COMPONENTS = ("llm", "vit", "cnn")
_TMP_PREFIX = f".{BASE_NAME}-tmp-"


def cache_dir() -> Path:
    """The cache folder: ``$EARTHGPT_CACHE``, else ``~/.cache/earthgpt``."""
    env = os.environ.get("EARTHGPT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "earthgpt"


def prepare_nano_base(cache: Path | None = None, *, force: bool = False, progress: bool = True) -> Path:
    """Convert the bundled packages once into ``<cache>/nano-base`` and return that folder.

    Returns at once when the folder (with a current manifest) exists, unless ``force``. The folder
    is built under a temporary name next to it and renamed when complete, so an interrupted run
    never leaves a half-made base.
    """
    from earthgpt.model import convert_bundled

    root = (cache or cache_dir()).expanduser()
    final = root / BASE_NAME
    if not force and _manifest_format(final) == MANIFEST_FORMAT:
        return final
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(root)
    convert_bundled.check_requirements()
    steps: list[tuple[str, Callable[[Path], dict]]] = [
        ("llm", convert_bundled.convert_llm), ("vit", convert_bundled.convert_vit),
        ("cnn", convert_bundled.convert_cnn),
    ]
    bar = tqdm(steps, desc="preparing nano-base", unit="component", disable=not progress)
    build = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=root))
    try:
        started = time.perf_counter()
        components = {}
        with transformers_progress(progress):
            for role, convert in bar:
                bar.set_postfix_str(role)
                log.info("converting %s", role)
                components[role] = convert(build / role)
        manifest = _manifest(build, components, time.perf_counter() - started)
        (build / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        build.chmod(0o755)  # mkdtemp makes it private; the finished cache is an ordinary folder
        _publish(build, final, replace=force or _manifest_format(final) != MANIFEST_FORMAT)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    log.info("nano-base ready at %s (base_id %s)", final, read_manifest(root)["base_id"])
    return final


def read_manifest(cache: Path | None = None) -> dict:
    """The manifest of the prepared bundled base; raises ``FileNotFoundError`` when not prepared."""
    path = (cache or cache_dir()).expanduser() / BASE_NAME / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no prepared base at {path.parent}; run `earthgpt weights prepare`")
    return json.loads(path.read_text())


def bundled_component(role: str, cache: Path | None = None) -> Path:
    """Folder of one bundled component (``llm``, ``vit`` or ``cnn``), preparing the base if needed."""
    if role not in COMPONENTS:
        raise ValueError(f"unknown bundled component {role!r}; known: {', '.join(COMPONENTS)}")
    return prepare_nano_base(cache) / role


def _manifest(build: Path, components: dict[str, dict], seconds: float) -> dict:
    import transformers

    identities = {
        role: weight_folder_identity(build / role, info["name"]) for role, info in components.items()
    }
    for role, info in components.items():
        info.update(identities[role], path=role)
        info["size_bytes"] = sum(f.stat().st_size for f in (build / role).iterdir())
    base_id = combine_base_identity(identities, prefix=BASE_NAME)["base_id"]
    return {"format": MANIFEST_FORMAT, "base_id": base_id, "components": components,
            "created_with": {"torch": torch.__version__, "transformers": transformers.__version__},
            "prepare_seconds": round(seconds, 1)}


def _manifest_format(folder: Path) -> int | None:
    try:
        return json.loads((folder / MANIFEST).read_text()).get("format")
    except (OSError, ValueError):
        return None


def _publish(build: Path, final: Path, *, replace: bool) -> None:
    """Rename the finished ``build`` to ``final``.

    An existing ``final`` is moved aside and deleted when ``replace``; otherwise it is kept (another
    process finished the same conversion first) and ``build`` is left for the caller to delete.
    """
    if final.exists() and not replace:
        return
    old = None
    if final.exists():
        old = final.with_name(f"{_TMP_PREFIX}{os.getpid()}-old")
        final.rename(old)
    try:
        build.rename(final)
    except OSError:
        if _manifest_format(final) != MANIFEST_FORMAT:  # not a concurrent, complete build: a real error
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_stale_builds(root: Path) -> None:
    """Delete leftovers of builds whose process is gone (killed runs)."""
    for path in root.glob(f"{_TMP_PREFIX}*"):
        pid = path.name[len(_TMP_PREFIX):].split("-")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            log.info("removing leftover of an interrupted build: %s", path)
            shutil.rmtree(path, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def transformers_progress(enabled: bool) -> Iterator[None]:
    """Turn transformers' own progress bars off for the duration when ``enabled`` is false."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
