"""Limits every fuzz case runs under: a time limit per case, and the one-line rule for messages."""

from __future__ import annotations

import faulthandler
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

CASE_SECONDS = 30
"""Per-case time limit. A case takes well under a second; the limit only catches a hang."""


class CaseTimeoutError(Exception):
    """A fuzz case ran past :data:`CASE_SECONDS`."""


@contextmanager
def time_limit(seconds: float = CASE_SECONDS) -> Iterator[None]:
    """Raise :class:`CaseTimeoutError` in the test when the block runs past ``seconds``. A hang inside C
    code (GDAL) never returns to Python to see the alarm, so past twice the limit faulthandler
    prints every thread's stack and ends the process: the run fails loudly instead of hanging."""

    def expired(signum: int, frame: object) -> None:
        raise CaseTimeoutError(f"the case ran past its {seconds} s limit")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(2 * seconds, exit=True, file=sys.__stderr__)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, previous)


def one_line(message: str) -> bool:
    """A message a user can read: one non-empty line, no traceback."""
    return bool(message.strip()) and "\n" not in message.strip() and "Traceback" not in message
