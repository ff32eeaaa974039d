"""Raster I/O (:mod:`earthgpt.raster`) on the real GeoTIFFs, JPEGs and small generated files."""

from __future__ import annotations

import itertools
import subprocess
import sys
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from app.demo_tiles import demo_tiles
from earthgpt.raster import (
    WHOLE_IMAGE_SIDE,
    NodataWindowError,
    RasterError,
    Tile,
    find_sar_pair,
    inspect,
    load_for_model,
    model_image,
    model_source,
    read_overview,
    read_window,
    tile_grid,
    window_reader,
)
from earthgpt.sensors import Sensor, sar_composite


def _write(path, array, **profile):
    base = {"driver": "GTiff", "count": array.shape[0], "height": array.shape[1], "width": array.shape[2],
            "dtype": array.dtype.name, "crs": "EPSG:32633", "transform": from_origin(500000, 4600000, 10, 10)}
    with rasterio.open(path, "w", **{**base, **profile}) as dst:
        dst.write(array)
    return path


def test_inspect_real_geotiff(shared_data):
    info = inspect(shared_data / "geotiff" / "optical" / "RGB.byte.tif")
    assert (info.width, info.height, info.count) == (791, 718, 3)
    assert info.crs == "EPSG:32618" and info.georeferenced and info.nodata == 0
    assert info.colorinterp == ("red", "green", "blue") and info.dtypes == ("uint8",) * 3
    assert info.transform[0] == pytest.approx(300.0379, abs=1e-3)


def test_inspect_geostationary_keeps_wkt_and_overviews(shared_data):
    info = inspect(shared_data / "geotiff" / "optical" / "goes.tif")
    assert "Geostationary" in info.crs and info.overviews == (2,)


def test_inspect_jpeg_and_png_are_not_georeferenced(shared_data, tmp_path):
    jpeg = next((shared_data / "hit_uav" / "JPEGImages").glob("*.jpg"))
    info = inspect(jpeg)
    assert not info.georeferenced and info.crs is None and info.count == 1
    png = tmp_path / "plain.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(png, "w", driver="PNG", width=8, height=6, count=3, dtype="uint8") as dst:
            dst.write(np.full((3, 6, 8), 9, dtype=np.uint8))
    assert not inspect(png).georeferenced and inspect(png).width == 8


def test_bad_files_raise_raster_errors(shared_data, tmp_path):
    with pytest.raises(RasterError, match="no such file"):
        inspect(tmp_path / "missing.tif")
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"this is not a tiff at all" * 10)
    with pytest.raises(RasterError, match="corrupt or unsupported"):
        inspect(garbage)
    cut_header = tmp_path / "cut_header.tif"  # RGB.byte.tif keeps its header at the end of the file
    cut_header.write_bytes((shared_data / "geotiff" / "optical" / "RGB.byte.tif").read_bytes()[:60_000])
    with pytest.raises(RasterError, match="corrupt or unsupported"):
        inspect(cut_header)
    noise = np.random.default_rng(0).integers(0, 255, (3, 200, 200), dtype=np.uint8)
    whole = _write(tmp_path / "whole.tif", noise)  # header first, pixels after
    cut_pixels = tmp_path / "cut_pixels.tif"
    cut_pixels.write_bytes(whole.read_bytes()[:40_000])
    assert inspect(cut_pixels).width == 200
    with pytest.raises(RasterError, match="truncated or corrupt"):
        read_overview(cut_pixels)
    many = _write(tmp_path / "cube.tif", np.zeros((17, 4, 4), dtype=np.uint8))
    with pytest.raises(RasterError, match="17 bands"):
        inspect(many)


def test_absurd_size_is_refused_before_reading(tmp_path):
    vrt = tmp_path / "huge.vrt"
    vrt.write_text(
        '<VRTDataset rasterXSize="2000000" rasterYSize="2000000">'
        '<VRTRasterBand dataType="Byte" band="1"></VRTRasterBand></VRTDataset>'
    )
    with pytest.raises(RasterError, match="2,000,000×2,000,000 pixels; at most 1,000,000 per side"):
        inspect(vrt)
    vrt.write_text(  # within the side limit, over the total: the message names the total (review, 2026-12-04)
        '<VRTDataset rasterXSize="1000000" rasterYSize="1000000">'
        '<VRTRasterBand dataType="Byte" band="1"></VRTRasterBand></VRTDataset>'
    )
    with pytest.raises(RasterError, match=r"1,000\.0 billion in all; at most 50 billion are supported$"):
        inspect(vrt)


def _sparse_big(path, size=20000):
    """A 20000×20000 tiled GTiff of zeros (sparse: unwritten tiles take no disk) with one marked tile."""
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint8",
               "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
               "sparse_ok": True, "crs": "EPSG:32633", "transform": from_origin(500000, 4600000, 1, 1)}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((1, 256, 256), 200, dtype=np.uint8), window=Window(10240, 10240, 256, 256))
    return path


def test_overview_of_a_20000_square_raster_stays_small(tmp_path):
    path = _sparse_big(tmp_path / "big.tif")
    assert path.stat().st_size < 1_000_000
    tracemalloc.start()
    array, scale = read_overview(path, max_size=1024)
    rgb, _meta = load_for_model(path, sensor=Sensor.optical)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert array.shape == (1, 1024, 1024) and scale == pytest.approx((20000 / 1024,) * 2)
    assert rgb.shape == (1024, 1024, 3)
    assert peak < 50 * 2**20, f"peak {peak / 2**20:.1f} MiB: the full 400 MB raster must never be read"
    marked = array[0, 10240 * 1024 // 20000 + 3, 10240 * 1024 // 20000 + 3]
    assert marked == 200 and array[0, 0, 0] == 0


def test_overview_of_a_big_raster_keeps_process_memory_bounded(tmp_path):
    """Resident memory, GDAL's block cache included, in a fresh process (the test process holds more)."""
    path = _sparse_big(tmp_path / "big.tif")
    code = (
        "import resource, sys; from earthgpt.raster import read_overview; "
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        "read_overview(sys.argv[1], max_size=1024); "
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parents[1])
    grown_mib = int(done.stdout.strip().splitlines()[-1])
    assert grown_mib < 150, f"reading the overview grew resident memory by {grown_mib} MiB"


def test_overview_comes_from_internal_overviews(tmp_path):
    path = _write(tmp_path / "ovr.tif", np.full((1, 512, 512), 10, dtype=np.uint8), tiled=True)
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews([4])
        dst.write(np.full((1, 512, 512), 99, dtype=np.uint8))  # overviews now hold the old value
    array, scale = read_overview(path, max_size=128)
    assert array.shape == (1, 128, 128) and scale == (4.0, 4.0)
    assert (array == 10).all()
    assert (read_window(path, 0, 0, 16, 16)[0] == 99).all()


def test_read_window_resizes_and_masks_outside(shared_data):
    path = shared_data / "geotiff" / "optical" / "RGB.byte.tif"
    array, scale = read_window(path, 300, 300, 200, 100, out_size=(100, 50))
    assert array.shape == (3, 50, 100) and scale == (2.0, 2.0)
    edge, _ = read_window(path, 741, 668, 100, 100)
    assert edge.shape == (3, 100, 100)
    mask = np.ma.getmaskarray(edge).all(axis=0)
    assert mask[60:, :].all() and mask[:, 60:].all()
    with pytest.raises(RasterError, match="band numbers"):
        read_window(path, 0, 0, 10, 10, bands=[4])


@pytest.mark.parametrize(("width", "height", "tile", "overlap"), [(1000, 700, 256, 32), (100, 90, 256, 0),
                                                                   (512, 512, 256, 0), (600, 300, 300, 100)])
def test_tile_grid_covers_without_padding(width, height, tile, overlap):
    windows = tile_grid(width, height, tile, overlap)
    covered = np.zeros((height, width), dtype=bool)
    for w in windows:
        assert w.col_off >= 0 and w.row_off >= 0
        assert w.col_off + w.width <= width and w.row_off + w.height <= height
        covered[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] = True
    assert covered.all()
    cols = sorted({w.col_off for w in windows})
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(cols))


def test_find_sar_pair_on_real_names(shared_data):
    folder = shared_data / "geotiff" / "sar"
    for vv in folder.glob("*_VV.tif"):
        assert find_sar_pair(vv) == vv.with_name(vv.name[:-6] + "VH.tif")
    vh = next(folder.glob("*_VH.tif"))
    assert find_sar_pair(vh) is None
    assert find_sar_pair(shared_data / "geotiff" / "optical" / "RGB.byte.tif") is None


def test_find_sar_pair_lowercase_tokens(tmp_path):
    (tmp_path / "s1a-iw-grd-vv-0001.tiff").write_bytes(b"")
    (tmp_path / "s1a-iw-grd-vh-0001.tiff").write_bytes(b"")
    assert find_sar_pair(tmp_path / "s1a-iw-grd-vv-0001.tiff").name == "s1a-iw-grd-vh-0001.tiff"


def test_load_for_model_sar_pair_makes_the_composite(shared_data):
    vv = next((shared_data / "geotiff" / "sar").glob("*_VV.tif"))
    rgb, meta = load_for_model(vv)
    assert meta["sensor"] is Sensor.sar and meta["pair"].endswith("_VH.tif")
    with rasterio.open(vv) as a, rasterio.open(meta["pair"]) as b:
        expected = sar_composite(a.read(1), b.read(1))
    assert np.array_equal(rgb, expected)


def test_load_for_model_optical_window_and_rgba(shared_data):
    optical = shared_data / "geotiff" / "optical"
    rgb, meta = load_for_model(optical / "RGB.byte.tif", window=Window(200, 200, 256, 128))
    assert rgb.shape == (128, 256, 3) and meta["sensor"] is Sensor.optical and meta["scale"] == (1.0, 1.0)
    rgb, meta = load_for_model(optical / "RGBA.uint16.tif")
    assert meta["bands"] == [3, 2, 1, 4] and rgb.shape == (411, 634, 3)
    assert set(np.unique(rgb)) <= {0, 128}
    with pytest.raises(NodataWindowError, match="only nodata"):
        load_for_model(optical / "RGB.byte.tif", window=Window(0, 0, 20, 20))


def test_load_for_model_infrared_jpeg_with_user_sensor(shared_data):
    jpeg = next((shared_data / "hit_uav" / "JPEGImages").glob("*.jpg"))
    rgb, meta = load_for_model(jpeg, sensor="infrared")
    assert rgb.shape == (512, 640, 3) and meta["reason"] == "chosen by the user"
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_demo_tiles_exist_and_load():
    tiles = demo_tiles()
    assert {t.sensor for t in tiles.values()} == set(Sensor)
    for tile in tiles.values():
        assert all(p.is_file() for p in tile.paths)
        rgb, _meta = load_for_model(tile.paths[0], sensor=tile.sensor)
        assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.max() > 0
    sar = next(t for t in tiles.values() if t.sensor is Sensor.sar)
    assert find_sar_pair(sar.paths[0]) == sar.paths[1]


def test_model_image_decimates_large_geotiffs_and_detects_the_sensor(tmp_path):
    data = np.random.default_rng(0).gamma(1.0, 0.05, (1, 2500, 3000)).astype(np.float32)
    path = _write(tmp_path / "big.tif", data)
    rgb, meta = model_image(path)
    assert meta["size"] == (3000, 2500) and meta["sensor"] is Sensor.sar
    assert "linear backscatter" in meta["reason"]
    assert rgb.dtype == np.uint8 and rgb.shape == (round(2500 * WHOLE_IMAGE_SIDE / 3000), WHOLE_IMAGE_SIDE, 3)


def test_sar_sibling_of_another_size_is_refused(tmp_path):
    vv = _write(tmp_path / "scene_VV.tif", np.full((1, 10, 12), 0.1, dtype=np.float32))
    _write(tmp_path / "scene_VH.tif", np.full((1, 10, 10), 0.01, dtype=np.float32))
    with pytest.raises(RasterError, match=r"scene_VH\.tif does not match scene_VV\.tif in size"):
        model_source(vv)
    assert model_source(vv, sensor="optical").pair is None  # only SAR files are paired


def test_window_reader_skips_nodata_windows_and_checks_bands_first(tmp_path):
    data = np.zeros((3, 20, 40), dtype=np.uint16)
    data[:, :, 20:] = np.random.default_rng(1).integers(1, 4000, (3, 20, 20))
    source = model_source(_write(tmp_path / "half.tif", data, nodata=0))
    read = window_reader(source, max_size=10)
    assert read(Tile(0, 0, 20, 20)) is None
    rgb = read(Tile(20, 0, 20, 20))
    assert rgb.shape == (10, 10, 3) and rgb.dtype == np.uint8
    with pytest.raises(RasterError, match="band numbers between 1 and 3"):
        window_reader(source, max_size=10, bands=[5, 3, 2])
