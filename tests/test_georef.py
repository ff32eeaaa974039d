"""Box corners on the map, checked against rasterio's own transforms on real and fixture GeoTIFFs."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_gcps, xy
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

from app.georef import (
    GeoreferenceError,
    grid_to_raster_pixels,
    map_to_lonlat,
    pixel_box_to_lonlat,
    pixel_to_map,
    window_box_to_raster_pixels,
)
from app.raster import inspect, read_window
from earthgpt.geometry import HBB, OBB, obb_from_cxcywha

TOL = 1e-6


def _expected_lonlat(path, corners):
    """Reference: rasterio.transform.xy at the grid corner (offset 'ul'), then rasterio.warp."""
    with rasterio.open(path) as src:
        cols = [c for c, _ in corners]
        rows = [r for _, r in corners]
        xs, ys = xy(src.transform, rows, cols, offset="ul")
        lons, lats = warp_transform(src.crs, "EPSG:4326", list(xs), list(ys))
    return list(zip(lons, lats, strict=True))


def _assert_ring(ring, expected):
    """The ring is closed, starts at the first corner and holds exactly the expected corners."""
    assert len(ring) == 5 and ring[0] == ring[-1]
    assert ring[0] == pytest.approx(expected[0], abs=TOL)
    for point in expected:
        assert any(np.allclose(point, got, atol=TOL, rtol=0) for got in ring[:4]), point
    lons, lats = np.array(ring).T
    assert np.sum(lons[:-1] * lats[1:] - lons[1:] * lats[:-1]) > 0  # counter-clockwise (RFC 7946)


REAL = [
    "optical/RGB.byte.tif",
    "optical/RGBA.uint16.tif",
    "optical/shade.tif",
    "optical/world.rgb.tif",
    "rsvqa_lr/0.tif",
    "rsvqa_hr/0.tif",
]


@pytest.mark.parametrize("name", REAL)
def test_hbb_corners_match_rasterio_on_real_geotiffs(shared_data, name):
    path = shared_data / "geotiff" / name
    info = inspect(path)
    box = HBB(10, 20.5, info.width * 0.6, info.height * 0.75)
    ring = pixel_box_to_lonlat(info, box)
    _assert_ring(ring, _expected_lonlat(path, box.corners()))


def test_sar_tiles_and_obb(shared_data):
    for path in sorted((shared_data / "geotiff" / "sar").glob("*.tif"))[:4]:
        info = inspect(path)
        obb = obb_from_cxcywha(50, 40, 30, 12, 35)
        _assert_ring(pixel_box_to_lonlat(info, obb), _expected_lonlat(path, obb.corners))


def test_rotated_and_sheared_raster_needs_all_four_corners(fixtures_dir):
    path = fixtures_dir / "rotated.tif"
    info = inspect(path)
    assert info.transform[1] != 0 and info.transform[3] != 0  # really rotated
    box = HBB(5, 4, 30, 25)
    ring = pixel_box_to_lonlat(info, box)
    _assert_ring(ring, _expected_lonlat(path, box.corners()))
    # the four corners are not the box spanned by two opposite ones
    lons, lats = np.array(ring[:4]).T
    assert len({round(v, 9) for v in lons}) == 4 and len({round(v, 9) for v in lats}) == 4


def test_geostationary_on_disk_and_off_disk(shared_data):
    path = shared_data / "geotiff" / "optical" / "goes.tif"
    info = inspect(path)
    box = HBB(250, 240, 300, 290)  # around the sub-satellite point (75° W, 0°)
    ring = pixel_box_to_lonlat(info, box)
    _assert_ring(ring, _expected_lonlat(path, box.corners()))
    assert all(-95 < lon < -55 and -20 < lat < 20 for lon, lat in ring)
    with pytest.raises(GeoreferenceError, match="off the Earth"):
        pixel_box_to_lonlat(info, HBB(0, 0, 20, 20))  # a corner of the square frame: space
    lons, _ = map_to_lonlat(info.crs, np.array([-5.4e6, 0.0]), np.array([5.4e6, 0.0]))
    assert np.isnan(lons[0]) and lons[1] == pytest.approx(-75.0)


def test_gcp_georeferenced_raster(fixtures_dir):
    path = fixtures_dir / "gcps.tif"
    info = inspect(path)
    assert info.georeferenced and info.crs is None and info.gcps_crs == "EPSG:4326"
    ring = pixel_box_to_lonlat(info, HBB(0, 0, 40, 30))
    # a first-order fit through 4 GCPs: corners land within the fit residual of the GCP positions
    for gcp in info.gcps:
        assert any(abs(lon - gcp.x) < 0.01 and abs(lat - gcp.y) < 0.01 for lon, lat in ring)
    with rasterio.open(path) as src:
        affine = from_gcps(src.gcps[0])
    centre = pixel_box_to_lonlat(info, HBB(19, 14, 21, 16))
    expected = affine @ (20.0, 15.0)
    assert np.mean([p[0] for p in centre[:4]]) == pytest.approx(expected[0], abs=1e-6)
    assert np.mean([p[1] for p in centre[:4]]) == pytest.approx(expected[1], abs=1e-6)


def test_not_georeferenced_image_says_so(shared_data):
    jpeg = next((shared_data / "hit_uav" / "JPEGImages").glob("*.jpg"))
    with pytest.raises(GeoreferenceError, match="not georeferenced"):
        pixel_box_to_lonlat(inspect(jpeg), HBB(1, 1, 10, 10))


def test_pixel_to_map_uses_grid_corners_not_centres(shared_data):
    info = inspect(shared_data / "geotiff" / "optical" / "world.rgb.tif")
    xs, ys = pixel_to_map(info.transform, np.array([0, 512]), np.array([0, 256]))
    assert xs.tolist() == pytest.approx([-180, 180]) and ys.tolist() == pytest.approx([90, -90])


def test_window_and_grid_boxes_go_back_to_raster_pixels():
    window = Window(100, 200, 512, 256)
    box = window_box_to_raster_pixels(HBB(10, 20, 30, 40), window, scale=(2.0, 2.0))
    assert box == HBB(120, 240, 160, 280)
    seen = OBB(((0, 0), (10, 0), (10, 5), (0, 5)))
    obb = window_box_to_raster_pixels(seen, (100, 200, 512, 256), (2.0, 2.0))
    assert sorted(obb.corners) == [(100, 200), (100, 210), (120, 200), (120, 210)]
    whole = grid_to_raster_pixels(HBB(0, 0, 1000, 1000), window, scale=(2.0, 2.0))
    assert whole == HBB(100, 200, 612, 456)
    half = grid_to_raster_pixels(HBB(500, 500, 1000, 1000), window)
    assert half == HBB(356, 328, 612, 456)


def test_window_read_box_lands_where_rasterio_says(shared_data):
    path = shared_data / "geotiff" / "optical" / "RGB.byte.tif"
    window = Window(300, 200, 400, 300)
    image, scale = read_window(path, 300, 200, 400, 300, out_size=(200, 150))
    assert image.shape == (3, 150, 200)
    box = grid_to_raster_pixels(HBB(250, 100, 750, 900), window, scale)
    assert box == HBB(400, 230, 600, 470)
    ring = pixel_box_to_lonlat(inspect(path), box)
    _assert_ring(ring, _expected_lonlat(path, box.corners()))


def test_cli_mapping_is_the_apps_mapping(fixtures_dir, shared_data):
    """``earthgpt detect`` maps an open dataset through the same code as the app (1e-6°)."""
    from earthgpt.georef import dataset_mappers

    for path in (fixtures_dir / "rotated.tif", shared_data / "geotiff" / "optical" / "RGB.byte.tif"):
        corners = HBB(5, 4, 30, 25).corners()
        with rasterio.open(path) as src:
            _, to_lonlat = dataset_mappers(src)
        got = to_lonlat(list(corners))
        assert np.allclose(got, _expected_lonlat(path, corners), atol=TOL, rtol=0)
        _assert_ring(pixel_box_to_lonlat(inspect(path), HBB(5, 4, 30, 25)), got)
    with rasterio.open(fixtures_dir / "gcps.tif") as src:
        _, to_lonlat = dataset_mappers(src)
    gcps = inspect(fixtures_dir / "gcps.tif")
    _assert_ring(pixel_box_to_lonlat(gcps, HBB(0, 0, 40, 30)), to_lonlat(list(HBB(0, 0, 40, 30).corners())))
