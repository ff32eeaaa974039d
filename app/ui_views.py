"""What the UI's components show for a session: the values the event handlers of
:mod:`app.ui_wiring` return. No behaviour lives here (that is :mod:`app.handlers`).

``views`` is the list of components every session change updates, in this order: the session
state, the window image (annotator), the overview, the conversation, the parsed answer, the image
info and the status line; :func:`everything` gives their values.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from app import handlers as H
from app.overlay import session_overview, session_view
from app.session_io import Session

DISPLAY_SIDE = 1024
"""Window images smaller than this (longest side, pixels) are enlarged for display by a whole factor."""


def image_file(image: np.ndarray) -> str:
    """``image`` as a PNG named by its content, written once and atomically (temporary name, then
    renamed). Gradio rewrites an array's cache file in place each time it is sent again, so an
    event reading an annotator while another sends the same image could read half a file; a path
    is copied into the cache without that race."""
    folder = Path(tempfile.gettempdir()) / "earthgpt-ui"
    folder.mkdir(exist_ok=True)
    path = folder / f"{hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest()}.png"
    if not path.exists():
        part = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.part.png")
        Image.fromarray(image).save(part)
        os.replace(part, path)
    return str(path)


def annotator_value(session: Session) -> dict[str, Any] | None:
    """The window image for the annotator, with detections and the region drawn into it.

    It carries no boxes: the annotator stays in its "create box" mode, so every drag draws a new
    region (a box of its own would switch it to moving that box after the first drag)."""
    image = session_view(session, DISPLAY_SIDE)
    return None if image is None else {"image": image_file(image), "boxes": []}


def everything(session: Session, status: str) -> tuple[Any, ...]:
    """New values for ``views`` (see the module notes)."""
    return (session, annotator_value(session), session_overview(session), H.chat_messages(session),
            H.parsed_markdown(session), H.info_markdown(session), status)


def loaded(session: Session, what: str) -> tuple[Any, ...]:
    """:func:`everything` after an image is opened (``what``: where it came from)."""
    return everything(session, f"Opened {session.name} ({what}); a new conversation starts.")


def stream(turns: Iterator[Session]) -> Iterator[tuple[Any, ...]]:
    """``views`` while an answer streams in (only the conversation changes), then all of them."""
    session = None
    for session in turns:
        yield (session, gr.skip(), gr.skip(), H.chat_messages(session), gr.skip(), gr.skip(), "Answering…")
    if session is not None:
        yield everything(session, f"Answered ({len(session.turns[-1].answer)} characters).")


def sensor_choice(value: str | None) -> str | None:
    """The sensor picker's value as the handlers take it (``auto`` → None: detect)."""
    return None if value in (None, "", "auto") else value


def grid_choices(session: Session, window_size: str) -> Any:
    """The window picker's choices for a window size."""
    if session.info is None:
        return gr.update(choices=[], value=None)
    windows = H.grid_windows(session, int(window_size))
    return gr.update(choices=[f"{i}: {c},{r} {w}×{h}" for i, (c, r, w, h) in enumerate(windows)], value=None)
