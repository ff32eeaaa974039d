"""The app gives freed heap memory back to the system (``app/memory.py``)."""

from __future__ import annotations

import ctypes
import platform
import threading

import pytest

from app import memory

GLIBC = platform.libc_ver()[0] == "glibc"


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_trim_returns_what_worker_threads_freed() -> None:
    """Many small blocks malloc'ed and freed in worker threads (their arenas) stay resident until
    a trim gives them back."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def churn() -> None:
        blocks = [libc.malloc(4096) for _ in range(25_000)]  # 100 MB in blocks under the mmap threshold
        for block in blocks:
            ctypes.memset(block, 1, 4096)
        for block in blocks[:-1]:
            libc.free(block)  # the last one stays: the arena's top cannot shrink past it

    threads = [threading.Thread(target=churn) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    before = _rss_kb()
    assert memory.trim()
    assert before - _rss_kb() > 100_000  # more than 100 of the 200 MB freed went back


def test_the_trimming_thread_starts_once() -> None:
    first = memory.start_trimming(every_s=3600)
    if not GLIBC:
        assert first is None
        return
    assert first is not None and first.daemon and first.is_alive()
    assert memory.start_trimming() is first
