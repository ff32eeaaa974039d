"""A saved session's image: a copy kept by content, and the checks that a file is that image.

A session file names its image by path, size in bytes and sha256
(:func:`earthgpt.identity.file_sha256`). The path alone does not last: an upload lives in
Gradio's temporary folder, gone after a restart. So saving a session also keeps the image in the
app's store, ``$EARTHGPT_APP_IMAGES`` or ``<EarthGPT cache>/app-images``, as
``<sha256>/<file name>`` (a hard link where the file system allows, else a copy; once per
content; a SAR file's cross-polarised sibling comes along so the pair still works). Reopening
looks for the image at its path, then in the store (:func:`find_image`); when both fail the
analyst picks the file again and :func:`check_same_image` makes sure it is the same image.

The store outlives sessions on purpose (a session file the analyst downloaded names its copy), so
ending a session does not empty it (the session's own folder goes then: :mod:`app.security`).
It is bounded instead (:func:`prune_store`, run at each save): an image not saved or reopened for
``$EARTHGPT_APP_IMAGES_DAYS`` days (default 30) goes, then the least recently used go until the
store holds at most ``$EARTHGPT_APP_IMAGES_MAX_MB`` (default 10,240 MB); the image just saved is
always kept. A session file whose image went reopens once the analyst picks the file again.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from earthgpt.identity import file_sha256
from earthgpt.raster import find_sar_pair

STORE_ENV = "EARTHGPT_APP_IMAGES"
MAX_MB_ENV, DEFAULT_MAX_MB = "EARTHGPT_APP_IMAGES_MAX_MB", 10_240
DAYS_ENV, DEFAULT_DAYS = "EARTHGPT_APP_IMAGES_DAYS", 30
SHA256 = re.compile(r"[0-9a-f]{64}")
"""A sha256 as :func:`earthgpt.identity.file_sha256` writes it (and a store folder's name)."""


def store_dir() -> Path:
    """The store's folder: ``$EARTHGPT_APP_IMAGES``, else ``app-images`` in the EarthGPT cache."""
    from earthgpt.model.base_cache import cache_dir

    env = os.environ.get(STORE_ENV)
    return Path(env) if env else cache_dir() / "app-images"


@dataclass(frozen=True)
class ImageRef:
    """What identifies an image file: its path, size in bytes and sha256."""

    path: Path
    size: int
    sha256: str


def image_ref(path: str | Path) -> ImageRef:
    """The reference of the file at ``path`` (reads it whole to hash it)."""
    path = Path(path)
    return ImageRef(path, path.stat().st_size, file_sha256(path))


def keep_image(path: str | Path) -> ImageRef:
    """Keep the image at ``path`` in the store (once per content) and return its reference there."""
    ref = image_ref(path)
    folder = store_dir() / ref.sha256
    stored = folder / ref.path.name
    if not stored.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        place_file(ref.path, stored)
    sibling = find_sar_pair(ref.path)
    if sibling is not None and not (folder / sibling.name).is_file():
        place_file(sibling, folder / sibling.name)
    os.utime(folder)  # used now: the last to go (prune_store)
    prune_store(keep=folder)
    return ImageRef(stored, ref.size, ref.sha256)


def _limit(name: str, default: int) -> int:
    """A positive whole number from the environment variable ``name``, else ``default``."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"${name} must be a positive whole number, got {text!r}")
    return int(text)


def _used(root: Path) -> list[tuple[float, int, Path]]:
    """``(last use, bytes, folder)`` of each image folder of the store, the most recently used first
    (a folder that goes while it is looked at is left out)."""
    found = []
    for folder in root.iterdir() if root.is_dir() else []:
        try:
            if folder.is_dir() and SHA256.fullmatch(folder.name):
                size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
                found.append((folder.stat().st_mtime, size, folder))
        except OSError:
            continue
    return sorted(found, key=lambda item: item[0], reverse=True)


def prune_store(keep: Path | None = None) -> list[str]:
    """Bound the store (see the module notes): remove the images not used (saved or reopened) for
    ``$EARTHGPT_APP_IMAGES_DAYS`` days, and the least recently used from the first that would take
    the store past ``$EARTHGPT_APP_IMAGES_MAX_MB`` on; the folder ``keep`` always stays. Returns
    the sha256s removed."""
    oldest = time.time() - _limit(DAYS_ENV, DEFAULT_DAYS) * 86_400
    budget, full, removed = _limit(MAX_MB_ENV, DEFAULT_MAX_MB) * 2**20, False, []
    for used, size, folder in _used(store_dir()):
        full = full or size > budget
        if folder != keep and (full or used < oldest):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
        else:
            budget -= size
    return removed


def place_file(source: Path, target: Path) -> None:
    """Hard-link or copy ``source`` to ``target`` through a temporary name (never a half-written file)."""
    partial = target.with_name(f".{target.name}.part")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(source, partial)
    os.replace(partial, target)


def is_same_image(path: str | Path, size: int, sha256: str) -> bool:
    """True when the file at ``path`` has this size and sha256 (the size is checked first: cheap)."""
    path = Path(path)
    return path.is_file() and path.stat().st_size == size and file_sha256(path) == sha256


def find_image(path: str | None, size: int | None, sha256: str | None) -> Path | None:
    """Where a session's image is now: ``path`` when it is still the same image, else the store's
    copy with that sha256; None when neither is there. Without a size and sha256 (a session file
    from before they were saved) ``path`` is taken as it is, if it exists. The caller decides
    which paths it may look at (:func:`app.session_files.reopen` passes None for one outside the
    session's files); the store is only looked in by a true sha256 (64 hex digits)."""
    if size is None or sha256 is None:
        return Path(path) if path and Path(path).is_file() else None
    if path and is_same_image(path, size, sha256):
        return Path(path)
    if not SHA256.fullmatch(sha256):
        return None
    folder = store_dir() / sha256
    kept = sorted(f for f in folder.iterdir() if not f.name.startswith(".")) if folder.is_dir() else []
    found = next((f for f in kept if is_same_image(f, size, sha256)), None)
    if found is not None:
        os.utime(folder)  # used now: the last to go (prune_store)
    return found


def check_same_image(path: str | Path, name: str, size: int | None, sha256: str | None) -> None:
    """Raise ValueError (saying what differs, without server paths) unless the file at ``path`` is
    the session's image ``name`` of ``size`` bytes and this sha256; a session file without them
    accepts any image."""
    if size is None or sha256 is None:
        return
    ref = image_ref(path)
    if ref.size != size or ref.sha256 != sha256:
        raise ValueError(
            f"{Path(path).name} is not the session's image {name}: expected {size:,} bytes with sha256 "
            f"{sha256[:12]}…, got {ref.size:,} bytes with sha256 {ref.sha256[:12]}…")
