"""Saving a session as a file and opening it again, even after the server restarted or the image moved.

*Save* keeps the image in the app's store (:mod:`app.image_store`) and writes the session with a
reference to that copy: its path, size and sha256. *Reopen* finds the image again (at that path,
else in the store by its sha256), reads it, and restores the window, region, detections and the
conversation; the model gets the conversation back on the next question
(:func:`app.handlers.ask` restores it into the new chat). When the image cannot be found the
analyst picks the file again: *re-point* (:func:`repoint_session`) checks it is the same image
(size and sha256) and reopens the session with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from app.demo_tiles import DEMO_DIR
from app.handlers import UserError, load_image, require_image, set_window
from app.image_store import check_same_image, find_image, keep_image
from app.security import file_in, is_within
from app.session_io import Session, read_session, save_session


def save_session_file(session: Session, out_dir: str | Path, model_name: str) -> Path:
    """Save the session (image reference, conversation, detections) as one JSON file in ``out_dir``;
    the image is kept in the store so the file still opens after Gradio's upload copy is gone."""
    require_image(session)
    ref = keep_image(session.path)
    kept = dataclasses.replace(session, path=str(ref.path), image_size=ref.size, image_sha256=ref.sha256)
    return save_session(kept, file_in(out_dir, f"{Path(session.name).stem or 'session'}.session.json"),
                        model_name)


def open_session_file(path: str | Path, roots: Sequence[Path] = (DEMO_DIR,)) -> Session:
    """Reopen a saved session: read the file, find its image (:func:`reopen`)."""
    return reopen(_read(path), roots)


def reopen(saved: Session, roots: Sequence[Path] = (DEMO_DIR,)) -> Session:
    """A session read by :func:`app.session_io.read_session` with its image found and read again:
    at its path when that lies inside ``roots`` (the app passes the session's uploads and the
    bundled demos, :func:`app.security.readable_roots`), else in the image store by its sha256.
    A path outside is never looked at, and refused with the same message as a missing image."""
    inside = saved.path if saved.path and is_within(saved.path, roots) else None
    found = find_image(inside, saved.image_size, saved.image_sha256)
    if found is None:
        raise UserError(f"the session's image {saved.name or 'file'} is no longer where the session was "
                        "saved: pick that image file under 'Session image moved?' to reopen the session")
    return _reopened(saved, found)


def repoint_session(session_file: str | Path | None, image: str | Path | None) -> Session:
    """Reopen the saved session ``session_file`` with the image at ``image`` (the analyst picked it
    because it moved): refused unless it is the session's image (same size and sha256)."""
    if not session_file:
        raise UserError("open the saved session (.json) first, then pick its image")
    if not image:
        raise UserError("pick the session's image file")
    saved = _read(session_file)
    try:
        check_same_image(image, saved.name, saved.image_size, saved.image_sha256)
    except (OSError, ValueError) as err:
        raise UserError(str(err)) from err
    return _reopened(saved, Path(image))


def _read(path: str | Path) -> Session:
    try:
        return read_session(path)
    except ValueError as err:
        raise UserError(str(err)) from err


def _reopened(saved: Session, image: Path) -> Session:
    session = load_image(Session(layers=saved.layers), image, sensor=saved.sensor, bands=saved.bands,
                         name=saved.name)
    if saved.window:
        session = set_window(session, *saved.window)
    reason = "as saved with the session" if saved.sensor else session.sensor_reason
    return dataclasses.replace(session, turns=list(saved.turns), found=list(saved.found), region=saved.region,
                               image_size=saved.image_size, image_sha256=saved.image_sha256,
                               sensor_reason=reason)
