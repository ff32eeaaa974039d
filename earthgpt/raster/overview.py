"""The whole raster at a glance, fast: a quick preview of a big raster without overviews from a
subset of its blocks, and the exact overview built block by block in the background.

GDAL serves a decimated read (``src.read(out_shape=…)``, :func:`earthgpt.raster.read_overview`)
from the file's overviews when it has them; without any it decodes nearly every block at full
resolution (a 20,000 × 20,000 tiled GeoTIFF: 6,241 blocks, about 26 s). Its nearest-neighbour rule
is known (:func:`source_pixels`), so the same image can be put together from whole blocks read
through windows on the block grid (:func:`read_blocks`): every block gives the exact image, and
every ``stride``-th block row and column a preview in which each pixel comes from the nearest
pixel that was decoded. The preview has the exact image's shape, so its scale, and with it every
transform and box placed through it, is exact. :func:`quick_overview` gives the exact image when
that is cheap, else the preview and starts the exact build on a background thread (one at a time,
results kept in memory: nothing is written, least of all next to the user's file).
"""

from __future__ import annotations

import atexit
import math
import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from earthgpt.raster.files import _indexes, _reading, open_raster, overview_shape

QUICK_BLOCKS = 256
"""At most this many blocks are decoded for a preview (a 256 × 256 × 3 uint16 block: ~1.5 ms)."""
KEPT_BUILDS = 8
"""Exact overviews kept in memory (a 768-pixel one of three uint16 bands: 3.5 MB)."""


@dataclass(frozen=True)
class Overview:
    """A whole-raster read: the pixels (bands, h, w), the scale ``(sx, sy)`` (full-raster pixels per
    pixel), whether they are GDAL's decimated pixels (else a preview), and the background build of
    the exact pixels when one was started for a preview."""

    array: np.ma.MaskedArray
    scale: tuple[float, float]
    exact: bool = True
    build: Future | None = None


def source_pixels(size: int, out: int) -> np.ndarray:
    """The full-raster pixel each of ``out`` pixels takes along an axis of ``size`` pixels in GDAL's
    nearest-neighbour decimated read: ``floor((i + 0.5) × size / out)``."""
    return np.floor((np.arange(out) + 0.5) * (size / out)).astype(np.int64)


def _sampled(size: int, block: int, stride: int) -> list[int]:
    """Every ``stride``-th block along an axis, the spare blocks split between both ends."""
    count = math.ceil(size / block)
    start = ((count - 1) % stride) // 2
    return list(range(start, count, stride))


def _nearest_decoded(pixels: np.ndarray, blocks: list[int], block: int, size: int) -> np.ndarray:
    """Each pixel moved to the nearest pixel inside one of the decoded ``blocks``."""
    starts = np.asarray(blocks) * block
    ends = np.minimum(starts + block, size) - 1
    inside = np.clip(pixels[:, None], starts[None, :], ends[None, :])
    return inside[np.arange(len(pixels)), np.abs(inside - pixels[:, None]).argmin(axis=1)]


def _runs(blocks: list[int]) -> list[tuple[int, int]]:
    """Consecutive block numbers as (first, last) runs, each one read (every block: one per row)."""
    runs: list[tuple[int, int]] = []
    for b in blocks:
        if runs and runs[-1][1] == b - 1:
            runs[-1] = (runs[-1][0], b)
        else:
            runs.append((b, b))
    return runs


def read_blocks(
    src: rasterio.DatasetReader, indexes: Sequence[int], out_w: int, out_h: int, stride: int = 1,
    stop: threading.Event | None = None,
) -> np.ma.MaskedArray:
    """The raster decimated to ``out_w × out_h`` from whole blocks: with ``stride`` 1 exactly GDAL's
    decimated read; with a larger one from every ``stride``-th block row and column only, each
    pixel taken from the nearest decoded pixel. Memory: the output and one row of blocks. Raises
    ``InterruptedError`` when ``stop`` is set (checked between block rows)."""
    bw, bh = src.block_shapes[0][1], src.block_shapes[0][0]
    cols, rows = _sampled(src.width, bw, stride), _sampled(src.height, bh, stride)
    xs = _nearest_decoded(source_pixels(src.width, out_w), cols, bw, src.width)
    ys = _nearest_decoded(source_pixels(src.height, out_h), rows, bh, src.height)
    dtype = np.result_type(*(src.dtypes[i - 1] for i in indexes))
    data = np.zeros((len(indexes), out_h, out_w), dtype=dtype)
    mask = np.zeros(data.shape, dtype=bool)
    needed = sorted(set(cols) & set((xs // bw).tolist()))  # a coarse read skips whole block columns
    for by in rows:
        if stop is not None and stop.is_set():
            raise InterruptedError("the overview build was stopped")
        out_rows = np.flatnonzero(ys // bh == by)
        if not out_rows.size:
            continue
        for first, last in _runs(needed):
            out_cols = np.flatnonzero((xs // bw >= first) & (xs // bw <= last))
            window = Window(first * bw, by * bh, min((last + 1) * bw, src.width) - first * bw,
                            min(bh, src.height - by * bh))
            block = src.read(indexes, window=window, masked=True)
            pick = np.ix_(np.arange(len(indexes)), out_rows, out_cols)
            at = np.ix_(np.arange(len(indexes)), ys[out_rows] - by * bh, xs[out_cols] - first * bw)
            data[pick] = np.ma.getdata(block)[at]
            mask[pick] = np.ma.getmaskarray(block)[at]
    return np.ma.MaskedArray(data, mask=mask)


def decoded_blocks(src: rasterio.DatasetReader, out_w: int, out_h: int) -> int:
    """How many full-resolution blocks a decimated read to ``out_w × out_h`` decodes."""
    bw, bh = src.block_shapes[0][1], src.block_shapes[0][0]
    return (len(np.unique(source_pixels(src.width, out_w) // bw))
            * len(np.unique(source_pixels(src.height, out_h) // bh)))


def preview_stride(src: rasterio.DatasetReader, out_w: int, out_h: int, max_blocks: int) -> int:
    """1 when GDAL's decimated read is cheap (overviews serve it, at most ``max_blocks`` blocks to
    decode, or a file read front to back, not in blocks); else the block stride of a preview that
    decodes at most ``max_blocks`` blocks."""
    factor = min(src.width / out_w, src.height / out_h)
    served = any(level <= factor for level in src.overviews(1))
    blocks = decoded_blocks(src, out_w, out_h)
    if served or blocks <= max_blocks or src.driver != "GTiff":
        return 1
    bw, bh = src.block_shapes[0][1], src.block_shapes[0][0]
    across, down = math.ceil(src.width / bw), math.ceil(src.height / bh)
    stride = 2
    while math.ceil(across / stride) * math.ceil(down / stride) > max_blocks:
        stride += 1
    return stride


class _Builds:
    """Exact overviews built one at a time on one daemon thread; the last :data:`KEPT_BUILDS` kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: OrderedDict[tuple, Future] = OrderedDict()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, key: tuple) -> Future | None:
        with self._lock:
            return self._futures.get(key)

    def submit(self, key: tuple, path: Path, indexes: list[int], out_w: int, out_h: int) -> Future:
        with self._lock:
            if key in self._futures:
                return self._futures[key]
            future: Future = Future()
            self._futures[key] = future
            while len(self._futures) > KEPT_BUILDS:
                self._futures.popitem(last=False)[1].cancel()
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="overview-build", daemon=True)
                self._thread.start()
                atexit.register(self.close)
        self._jobs.put((future, path, indexes, out_w, out_h))
        return future

    def _work(self) -> None:
        while not self._stop.is_set():
            future, path, indexes, out_w, out_h = self._jobs.get()
            if future is None or not future.set_running_or_notify_cancel():
                continue
            try:
                with open_raster(path) as src, _reading(path):
                    future.set_result(read_blocks(src, indexes, out_w, out_h, stop=self._stop))
            except Exception as err:  # handed to whoever waits on the build
                future.set_exception(err)

    def close(self) -> None:
        """Stop after the current block row (at exit: no GDAL call left running)."""
        self._stop.set()
        self._jobs.put((None, None, None, None, None))
        if self._thread is not None:
            self._thread.join(timeout=10)


_BUILDS = _Builds()


def _key(path: Path, indexes: list[int], out_w: int, out_h: int) -> tuple:
    stat = path.stat()
    return (os.path.realpath(path), stat.st_size, stat.st_mtime_ns, tuple(indexes), out_w, out_h)


def quick_overview(
    path: str | Path, max_size: int = 1024, bands: Sequence[int] | None = None,
    max_blocks: int = QUICK_BLOCKS, background: bool = True,
) -> Overview:
    """The whole raster at most ``max_size`` pixels a side, fast: GDAL's decimated read when that
    is cheap (:func:`preview_stride`) or already built, else a preview from at most ``max_blocks``
    blocks whose :attr:`Overview.build` (``background``) gives the exact pixels when done."""
    path = Path(path)
    with open_raster(path) as src:
        out_w, out_h = overview_shape(src.width, src.height, max_size)
        indexes = _indexes(src, list(bands) if bands else None)
        scale = (src.width / out_w, src.height / out_h)
        key = _key(path, indexes, out_w, out_h)
        built = _BUILDS.get(key)
        if built is not None and built.done() and not built.cancelled() and built.exception() is None:
            return Overview(built.result().copy(), scale)  # a copy: the kept one is shared
        stride = preview_stride(src, out_w, out_h, max_blocks)
        with _reading(path):
            if stride == 1:
                return Overview(src.read(indexes, out_shape=(len(indexes), out_h, out_w), masked=True), scale)
            preview = read_blocks(src, indexes, out_w, out_h, stride)
    build = _BUILDS.submit(key, path, indexes, out_w, out_h) if background else None
    return Overview(preview, scale, exact=False, build=build)
