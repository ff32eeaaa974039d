"""Boxes between the spaces (grid, image, full-raster pixels, map, lon/lat), through the functions
the app, the exports and ``earthgpt detect`` call, checked against rasterio's own transforms on
real and fixture GeoTIFFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_gcps, xy
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

from earthgpt.box_spaces import (
    GeoreferenceError,
    box_polygon,
    grid_to_raster,
    image_to_raster,
    placed_by_affine,
    raster_to_grid,
    raster_to_image,
    raster_to_lonlat,
    raster_to_map,
)
from earthgpt.geometry import HBB, OBB, Detection, grid_to_pixel, obb_from_cxcywha
from earthgpt.raster import RasterInfo, Tile, inspect
from earthgpt.vector_export import feature_collection

TOL = 1e-6


def _expected_lonlat(path, corners):
    """Reference: rasterio.transform.xy at the grid corner (offset 'ul'), then rasterio.warp."""
    with rasterio.open(path) as src:
        cols = [c for c, _ in corners]
        rows = [r for _, r in corners]
        xs, ys = xy(src.transform, rows, cols, offset="ul")
        lons, lats = warp_transform(src.crs, "EPSG:4326", list(xs), list(ys))
    return list(zip(lons, lats, strict=True))


def _to_lonlat(info: RasterInfo):
    """The app's mapper of an open image: full-raster pixels → (lon, lat), from its header."""
    return raster_to_lonlat(info.transform, info.crs, info.gcps, info.gcps_crs)


def _ring(info: RasterInfo, box):
    """The exterior ring an export writes for a full-raster pixel box (before rounding)."""
    return list(box_polygon(box, _to_lonlat(info)).exterior.coords)


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
    _assert_ring(_ring(info, box), _expected_lonlat(path, box.corners()))


def test_sar_tiles_and_obb(shared_data):
    for path in sorted((shared_data / "geotiff" / "sar").glob("*.tif"))[:4]:
        info = inspect(path)
        obb = obb_from_cxcywha(50, 40, 30, 12, 35)
        _assert_ring(_ring(info, obb), _expected_lonlat(path, obb.corners))


def test_rotated_and_sheared_raster_needs_all_four_corners(fixtures_dir):
    path = fixtures_dir / "rotated.tif"
    info = inspect(path)
    assert info.transform[1] != 0 and info.transform[3] != 0  # really rotated
    box = HBB(5, 4, 30, 25)
    ring = _ring(info, box)
    _assert_ring(ring, _expected_lonlat(path, box.corners()))
    # the four corners are not the box spanned by two opposite ones
    lons, lats = np.array(ring[:4]).T
    assert len({round(v, 9) for v in lons}) == 4 and len({round(v, 9) for v in lats}) == 4


def test_geostationary_on_disk_and_off_disk(shared_data):
    path = shared_data / "geotiff" / "optical" / "goes.tif"
    info = inspect(path)
    box = HBB(250, 240, 300, 290)  # around the sub-satellite point (75° W, 0°)
    ring = _ring(info, box)
    _assert_ring(ring, _expected_lonlat(path, box.corners()))
    assert all(-95 < lon < -55 and -20 < lat < 20 for lon, lat in ring)
    with pytest.raises(GeoreferenceError, match="off the Earth"):
        _ring(info, HBB(0, 0, 20, 20))  # a corner of the square frame: space
    nadir = ~rasterio.Affine(*info.transform) @ (0.0, 0.0)  # the pixel at the projection's origin
    ((lon, lat),) = _to_lonlat(info)([nadir])
    assert (lon, lat) == pytest.approx((-75.0, 0.0), abs=TOL)


def test_gcp_georeferenced_raster(fixtures_dir):
    path = fixtures_dir / "gcps.tif"
    info = inspect(path)
    assert info.georeferenced and info.crs is None and info.gcps_crs == "EPSG:4326"
    assert not placed_by_affine(info.transform, info.crs)  # the map shows it in its pixel space
    ring = _ring(info, HBB(0, 0, 40, 30))
    # a first-order fit through 4 GCPs: corners land within the fit residual of the GCP positions
    for gcp in info.gcps:
        assert any(abs(lon - gcp.x) < 0.01 and abs(lat - gcp.y) < 0.01 for lon, lat in ring)
    with rasterio.open(path) as src:
        affine = from_gcps(src.gcps[0])
    centre = _ring(info, HBB(19, 14, 21, 16))
    expected = affine @ (20.0, 15.0)
    assert np.mean([p[0] for p in centre[:4]]) == pytest.approx(expected[0], abs=1e-6)
    assert np.mean([p[1] for p in centre[:4]]) == pytest.approx(expected[1], abs=1e-6)


def test_not_georeferenced_image_stays_in_pixel_space():
    jpeg = next((Path(__file__).resolve().parents[1] / "assets" / "demo").glob("*.jpg"))
    info = inspect(jpeg)
    assert raster_to_map(info.transform, info.crs, info.gcps, info.gcps_crs) is None
    assert not placed_by_affine(info.transform, info.crs)
    collection = feature_collection([Detection("car", HBB(1, 2, 10, 20))], [{}], to_lonlat=_to_lonlat(info))
    assert "Not georeferenced" in collection["note"]
    (ring,) = collection["features"][0]["geometry"]["coordinates"]  # y down: the box's own corner order
    assert ring == [[1, 2], [10, 2], [10, 20], [1, 20], [1, 2]]


def test_pixel_to_map_uses_grid_corners_not_centres(shared_data):
    info = inspect(shared_data / "geotiff" / "optical" / "world.rgb.tif")
    to_map, crs = raster_to_map(info.transform, info.crs, info.gcps, info.gcps_crs)
    assert crs == "EPSG:4326" and placed_by_affine(info.transform, info.crs)
    assert np.allclose(to_map([(0, 0), (512, 256)]), [(-180, 90), (180, -90)])


def test_image_and_grid_boxes_go_to_raster_pixels_and_back():
    window = Tile(100, 200, 512, 256)
    box = image_to_raster(HBB(10, 20, 30, 40), window, (2.0, 2.0))
    assert box == HBB(120, 240, 160, 280)
    assert raster_to_image(box, window, (256, 128)) == HBB(10, 20, 30, 40)
    seen = OBB(((0, 0), (10, 0), (10, 5), (0, 5)))
    obb = image_to_raster(seen, Window(100, 200, 512, 256), (2.0, 2.0))  # a rasterio Window works too
    assert sorted(obb.corners) == [(100, 200), (100, 210), (120, 200), (120, 210)]
    assert raster_to_image(obb, window, (256, 128)) == seen
    assert grid_to_raster(HBB(0, 0, 1000, 1000), window) == HBB(100, 200, 612, 456)
    half = grid_to_raster(HBB(500, 500, 1000, 1000), window)
    assert half == HBB(356, 328, 612, 456)
    assert raster_to_grid(half, window) == HBB(500, 500, 1000, 1000)
    assert raster_to_grid(HBB(0, 0, 5000, 5000), window) == HBB(0, 0, 1000, 1000)  # clamped


def test_drawn_box_and_answered_box_land_where_rasterio_says(shared_data):
    """The model's grid box over a resampled window, and the same box drawn on that window's
    image, land on the same full-raster pixels and on rasterio's lon/lat."""
    path = shared_data / "geotiff" / "optical" / "RGB.byte.tif"
    window, image_size = Tile(300, 200, 400, 300), (200, 150)
    scale = (window.width / image_size[0], window.height / image_size[1])
    grid = HBB(250, 100, 750, 900)
    answered = grid_to_raster(grid, window)
    assert answered == HBB(400, 230, 600, 470)
    assert image_to_raster(grid_to_pixel(grid, *image_size), window, scale) == answered
    _assert_ring(_ring(inspect(path), answered), _expected_lonlat(path, answered.corners()))


def test_cli_mapping_is_the_apps_mapping(fixtures_dir, shared_data):
    """``earthgpt detect`` maps an open dataset (rasterio Affine, CRS, GCPs), the app its header
    (coefficients, CRS text): the same lon/lat (1e-6°)."""
    box = HBB(5, 4, 30, 25)
    for path in (fixtures_dir / "rotated.tif", shared_data / "geotiff" / "optical" / "RGB.byte.tif",
                 fixtures_dir / "gcps.tif"):
        with rasterio.open(path) as src:
            got = box_polygon(box, raster_to_lonlat(src.transform, src.crs, *src.gcps))
        assert np.allclose(got.exterior.coords, _ring(inspect(path), box), atol=TOL, rtol=0)
        if path.name != "gcps.tif":
            _assert_ring(list(got.exterior.coords), _expected_lonlat(path, box.corners()))
