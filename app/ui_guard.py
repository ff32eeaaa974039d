"""The guard around every event of the UI: a handler's error becomes a warning, never a crash.

An error the analyst can act on (:data:`EXPECTED`) is shown as a warning toast and a line in the
status box; any other is a bug: the same, marked "unexpected error", and its traceback goes to the
server log. Messages never show server paths (:func:`app.messages.for_user`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from app.handlers import UserError
from app.messages import for_user
from earthgpt.raster import RasterError

EXPECTED = (UserError, RasterError, ValueError)
"""Errors with a message for the analyst; anything else is a bug and is shown as one."""

log = logging.getLogger("earthgpt.app")


def error_text(err: Exception) -> str:
    """The message for ``err``: its own for :data:`EXPECTED` errors, else marked unexpected."""
    message = str(err) if isinstance(err, EXPECTED) else f"unexpected error ({type(err).__name__}): {err}"
    return for_user(message)


def user_warning(message: str) -> str:
    """Show ``message`` as a warning toast; returns the status line for it."""
    gr.Warning(message)
    return f"⚠ {message}"


def _failed(fn: Callable[..., Any], err: Exception) -> str:
    if not isinstance(err, EXPECTED):
        log.error("handler %s failed", getattr(fn, "__name__", fn), exc_info=err)
    return user_warning(error_text(err))


def guarded(fn: Callable[..., tuple[Any, ...]], outputs: int) -> Callable[..., tuple[Any, ...]]:
    """Run a handler; on error leave every output but the last (the status box) as it was."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # the app must keep running whatever a handler does
            return (*([gr.skip()] * (outputs - 1)), _failed(fn, err))

    return run


def guarded_stream(
    fn: Callable[..., Iterator[tuple[Any, ...]]], outputs: int
) -> Callable[..., Iterator[tuple[Any, ...]]]:
    """:func:`guarded` for generator handlers (streamed answers)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Iterator[tuple[Any, ...]]:
        try:
            yield from fn(*args, **kwargs)
        except Exception as err:
            yield (*([gr.skip()] * (outputs - 1)), _failed(fn, err))

    return run
