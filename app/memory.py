"""Give freed memory back to the system while the app runs for days.

Gradio answers events on a pool of worker threads, and glibc's ``malloc`` gives threads arenas of
their own. A turn frees large, short-lived buffers (a decoded window, its PNGs, a KV cache, a
detection's image batch) into whichever arena the thread used; glibc keeps those free pages for
reuse instead of returning them, so the server's RSS creeps up with the number of threads and the
mix of sizes, not with what it holds (``bench/load_app.py`` measured it: RSS still climbing after
76 cycles of 8 analysts, while the same handlers called in a loop, in one thread or in 40, stay
flat; with the trim the floor stays flat and the RSS falls back to about 1.4 GB after the load, see
BENCHMARKS.md). ``malloc_trim(0)`` returns every arena's free pages (glibc 2.8 and later); a daemon
thread calls it every :data:`TRIM_EVERY_S` seconds. It costs a few milliseconds and changes nothing
else; elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from functools import cache

TRIM_EVERY_S = 30.0
"""Seconds between two trims."""

_started: list[threading.Thread] = []
_lock = threading.Lock()


@cache
def _malloc_trim() -> object | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return None if libc is None else libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


def trim() -> bool:
    """Return free heap pages to the system now; False where the C library cannot."""
    function = _malloc_trim()
    if function is None:
        return False
    function(0)
    return True


def start_trimming(every_s: float = TRIM_EVERY_S) -> threading.Thread | None:
    """Start the trimming thread once per process (later calls return the same thread); None where
    the C library has no ``malloc_trim``."""
    if _malloc_trim() is None:
        return None
    with _lock:
        if not _started:
            def run() -> None:
                while True:
                    time.sleep(every_s)
                    trim()

            thread = threading.Thread(target=run, name="earthgpt-malloc-trim", daemon=True)
            thread.start()
            _started.append(thread)
        return _started[0]
