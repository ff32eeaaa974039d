"""The quick overview of a big raster (:mod:`earthgpt.raster.overview`), its background build, the
app's swap of the preview for the exact overview, and the benchmark script at a tiny size."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from browser_support import open_page, wait_status
from rasterio.transform import from_origin
from rasterio.windows import Window

from app import handlers as H
from app.session_io import Session
from earthgpt.raster import RasterError, load_for_model, quick_overview, read_overview
from earthgpt.raster.overview import preview_stride, read_blocks

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, array: np.ndarray, block: int | None = 256, **profile: Any) -> Path:
    base = {"driver": "GTiff", "count": array.shape[0], "height": array.shape[1], "width": array.shape[2],
            "dtype": array.dtype.name, "crs": "EPSG:32633", "transform": from_origin(500000, 4600000, 10, 10),
            "compress": "deflate"}
    if block:
        base.update(tiled=True, blockxsize=block, blockysize=block)
    with rasterio.open(path, "w", **{**base, **profile}) as dst:
        dst.write(array)
    return path


def _ramp(size: int = 1024) -> np.ndarray:
    """Three smooth uint16 bands (ramps along x, y and the diagonal)."""
    y, x = np.mgrid[0:size, 0:size]
    return np.stack([1000 + 4 * x, 1000 + 4 * y, 1000 + 2 * (x + y)]).astype(np.uint16)


class CountingReads:
    """A dataset whose window reads are counted (each is one block when the stride is above 1)."""

    def __init__(self, src: rasterio.DatasetReader) -> None:
        self.src, self.reads = src, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.src, name)

    def read(self, *args: Any, **kwargs: Any) -> np.ma.MaskedArray:
        self.reads += 1
        return self.src.read(*args, **kwargs)


@pytest.mark.parametrize(("width", "height", "out", "block", "nodata"), [
    (1000, 700, (500, 350), 256, None), (1001, 999, (768, 767), 256, 7), (900, 300, (768, 256), None, None),
    (600, 1300, (101, 219), 64, 0), (2000, 900, (9, 4), 64, None),  # the last skips whole blocks
])
def test_block_by_block_read_is_gdals_decimated_read(tmp_path, width, height, out, block, nodata):
    data = np.random.default_rng(0).integers(0, 9, (2, height, width)).astype(np.uint16)
    path = _write(tmp_path / "r.tif", data, block=block, nodata=nodata)
    with rasterio.open(path) as src:
        gdal = src.read(out_shape=(2, out[1], out[0]), masked=True)
        ours = read_blocks(src, [1, 2], *out)
    assert np.array_equal(ours.data, gdal.data)
    assert np.array_equal(ours.mask, np.ma.getmaskarray(gdal))


def test_quick_view_is_a_close_preview_with_the_exact_shape_and_scale(tmp_path):
    path = _write(tmp_path / "smooth.tif", _ramp(), block=128)  # 8 × 8 blocks
    found = quick_overview(path, 768, max_blocks=16, background=False)
    exact, scale = read_overview(path, 768)
    assert not found.exact and found.build is None
    assert found.array.shape == exact.shape == (3, 768, 768) and found.scale == scale == (1024 / 768,) * 2
    error = np.abs(found.array.astype(float) - exact.astype(float))
    assert error.mean() < 0.03 * (exact.max() - exact.min())
    assert np.array_equal(found.array[:, :96, :96], exact[:, :96, :96])  # block (0, 0) was decoded
    with rasterio.open(path) as src:
        counted = CountingReads(src)
        stride = preview_stride(src, 768, 768, 16)
        read_blocks(counted, [1, 2, 3], 768, 768, stride)
    assert stride == 2 and counted.reads == 16


def test_files_with_overviews_take_the_overview_path(tmp_path):
    path = _write(tmp_path / "pyramid.tif", np.full((1, 1024, 1024), 10, dtype=np.uint16), block=64)
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews([2, 4])
        dst.write(np.full((1, 1024, 1024), 99, dtype=np.uint16))  # the overviews keep the old value
    found = quick_overview(path, 256, max_blocks=4)  # 256 blocks at full resolution, 16 in the 4× level
    assert found.exact and found.build is None and (found.array == 10).all()
    assert np.array_equal(found.array, read_overview(path, 256)[0])


def test_background_build_is_gdals_decimated_read_and_is_kept(tmp_path):
    data = np.random.default_rng(1).integers(0, 4000, (3, 750, 850)).astype(np.uint16)
    path = _write(tmp_path / "noisy.tif", data, block=32, nodata=3)
    preview = quick_overview(path, 768)
    assert not preview.exact and preview.build is not None
    built = preview.build.result(timeout=120)
    with rasterio.open(path) as src:
        gdal = src.read(out_shape=(3, *preview.array.shape[1:]), masked=True)
    assert np.array_equal(built.data, gdal.data) and np.array_equal(built.mask, np.ma.getmaskarray(gdal))
    again = quick_overview(path, 768)
    assert again.exact and again.build is None and np.array_equal(again.array, built)


def test_a_preview_that_missed_all_data_waits_for_the_exact_read(tmp_path):
    data = np.zeros((3, 1024, 1024), dtype=np.uint16)
    data[:, 32:64, 32:64] = 500  # only block (1, 1): the preview decodes every other block from (0, 0)
    path = _write(tmp_path / "collar.tif", data, block=32, nodata=0)
    rgb, meta = load_for_model(path, None, sensor="optical", max_size=768, quick=True)
    assert meta["overview_builds"] == () and rgb.shape == (768, 768, 3) and rgb.any()


def test_app_opens_a_big_raster_with_a_preview_then_swaps_in_the_exact_overview(tmp_path):
    path = _write(tmp_path / "scene.tif", _ramp(), block=32)  # 1,024 blocks
    session = H.load_image(Session(), path)
    assert session.overview_builds and "quick preview" in H.info_markdown(session)
    assert session.overview_scale == (1024 / 768, 1024 / 768) and session.overview.shape == (768, 768, 3)
    for build in session.overview_builds:
        build.result(timeout=120)
    refined, status = H.refine_overview(session)
    exact, _ = load_for_model(path, None, sensor=session.sensor, max_size=H.OVERVIEW_SIZE)
    assert status == "Full overview ready." and refined.overview_builds == ()
    assert np.array_equal(refined.overview, exact) and "quick preview" not in H.info_markdown(refined)
    assert H.refine_overview(refined) is None


def test_a_failed_build_leaves_the_preview_and_says_why(tmp_path):
    path = _write(tmp_path / "small.tif", _ramp(512))
    failed: Future = Future()
    failed.set_exception(RasterError("could not read the pixels of small.tif (truncated or corrupt?)"))
    session = H.load_image(Session(), path)
    preview = session.overview
    refined, status = H.refine_overview(dataclasses.replace(session, overview_builds=(failed,)))
    assert refined.overview_builds == () and refined.overview is preview
    assert "could not be built (could not read the pixels of small.tif" in status


@pytest.mark.browser
def test_the_page_swaps_the_preview_for_the_full_overview(browser: object, server: str, tmp_path: Path):
    """Upload a big raster: the timer started after the open swaps in the full overview, and says so
    (only a preview being replaced gives that status line)."""
    path = _write(tmp_path / "big.tif", _ramp(), block=32)
    page = open_page(browser, server, [])
    page.locator("#upload input[type=file]").set_input_files(str(path))
    wait_status(page, "Full overview ready", timeout=120000)
    assert "quick preview" not in page.inner_text("#info")
    page.close()


def test_the_benchmark_runs_at_a_tiny_size(tmp_path):
    script = ROOT / "bench" / "bench_scene_overview.py"
    spec = importlib.util.spec_from_file_location("bench_scene_overview", script)
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_scene_overview"] = bench
    spec.loader.exec_module(bench)
    out = tmp_path / "overview.json"
    assert bench.main(["--size", "600", "--repeats", "1", "--out", str(out), "--workdir", str(tmp_path)]) == 0
    result = json.loads(out.read_text())
    assert {"benchmark", "baseline", "size", "overview_size", "repeats", "files", "full_overview",
            "targets"} <= set(result)
    for name in ("no_overviews", "overviews"):
        rows = result["files"][name]
        assert set(rows) == {"gdal", "quick", "app"}
        assert {"median_s", "median_cpu_s", "peak_mb", "above_imports_mb", "speedup"} <= set(rows["app"])
    assert set(result["targets"]) == {"no_overviews_under_2_s", "no_overviews_under_1_gb",
                                      "overviews_quick_not_slower_than_gdal"}


def test_window_reads_are_left_as_they_were(tmp_path):
    """Only whole-image reads for display take the quick path; a window is read as before."""
    path = _write(tmp_path / "scene.tif", _ramp(), block=32)
    window = Window(100, 200, 512, 512)
    rgb, meta = load_for_model(path, window, sensor="optical", max_size=256, quick=True)
    plain, _ = load_for_model(path, window, sensor="optical", max_size=256)
    assert meta["overview_builds"] == () and np.array_equal(rgb, plain)
