"""The pure parts behind the layout and region drawing, without a browser: a box drawn on the map
becomes the region, small tiles are enlarged for display, the map knows when to redraw, and the
analyst's messages name files, never server paths."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from app import handlers as H
from app.demo_tiles import demo_tiles, open_demo
from app.map_region import map_box_to_raster, region_from_map, region_grid_text, region_status
from app.maps import build_map, map_key
from app.messages import for_user
from app.overlay import display_factor, session_view
from app.page import map_listener, map_region_script, page_head, page_script
from app.session_io import Found, Session
from earthgpt.box_spaces import lonlat_to_raster, raster_to_lonlat
from earthgpt.geometry import HBB, Detection

DEMOS = demo_tiles()


@pytest.fixture(scope="module")
def landsat() -> Session:
    """The Landsat demo (791 × 718 px, EPSG:32618), opened as one window."""
    return open_demo(Session(), DEMOS["optical-landsat"])


@pytest.fixture(scope="module")
def thermal() -> Session:
    """The HIT-UAV demo (640 × 512 px, not georeferenced: the map shows it in pixels)."""
    return open_demo(Session(), DEMOS["infrared-hituav"])


def test_lonlat_to_raster_inverts_raster_to_lonlat(landsat: Session) -> None:
    info = landsat.info
    pixels = [(0.0, 0.0), (791.0, 718.0), (123.5, 456.25)]
    lonlat = raster_to_lonlat(info.transform, info.crs)(pixels)
    back = lonlat_to_raster(info.transform, info.crs)(lonlat)
    assert np.allclose(back, pixels, atol=1e-6)


def test_a_box_on_the_globe_becomes_the_raster_box_that_holds_it(landsat: Session) -> None:
    to_lonlat = raster_to_lonlat(landsat.info.transform, landsat.info.crs)
    (west, south), (east, north) = to_lonlat([(100, 300)])[0], to_lonlat([(300, 100)])[0]
    box = map_box_to_raster(landsat.info, south, west, north, east)
    assert box.x1 == pytest.approx(100) and box.x2 == pytest.approx(300)
    assert box.y1 < 100 and box.y2 > 300  # the UTM grid is turned against lon/lat: the corners spread
    assert map_box_to_raster(landsat.info, 80.0, 170.0, 81.0, 171.0) is None  # the far side of the Earth


def test_a_box_on_the_pixel_map_is_clipped_and_can_move_the_window(thermal: Session) -> None:
    assert map_box_to_raster(thermal.info, -300, 100, -100, 200) == HBB(100, 100, 200, 300)
    assert map_box_to_raster(thermal.info, -900, -50, 10, 50) == HBB(0, 0, 50, 512)  # clipped
    small = H.set_window(thermal, 0, 0, 256, 256)
    moved = region_from_map(small, -500, 400, -400, 600)  # rows 400–500, columns 400–600
    assert moved.region == HBB(400, 400, 600, 500)
    col, row, width, height = moved.window
    assert (width, height) == (256, 256) and col <= 400 and col + width >= 600 - 56 and row + height >= 500
    with pytest.raises(H.UserError, match="not on the image"):
        region_from_map(thermal, 100, 900, 200, 1000)


def test_region_texts_give_pixels_and_the_grid(thermal: Session) -> None:
    session = region_from_map(thermal, -256, 160, 0, 320)
    assert region_grid_text(session) == "[250, 0, 500, 500]"
    assert region_status(session, "on the map") == (
        "Region set on the map: [160, 0, 320, 256] px, [250, 0, 500, 500] on the window's grid.")
    assert region_status(dataclasses.replace(session, region=None), "") == "Region cleared."


def test_small_tiles_are_enlarged_by_a_whole_factor(thermal: Session) -> None:
    assert display_factor((100, 100), 1024) == 10 and display_factor((150, 120), 1024) == 6
    assert display_factor((791, 718), 1024) == 1 and display_factor((100, 100), 0) == 1
    small = H.set_window(thermal, 0, 0, 100, 80)
    shown = session_view(small, 1024)
    assert shown.shape == (800, 1000, 3)
    assert np.array_equal(shown[::10, ::10], small.view)  # each pixel a 10 × 10 block
    assert session_view(small).shape == small.view.shape


def test_a_box_drawn_on_the_enlarged_image_is_in_the_tiles_pixels(thermal: Session) -> None:
    small = H.set_window(thermal, 40, 20, 100, 80)
    drawn = H.draw_region(small, [{"xmin": 100, "ymin": 200, "xmax": 500, "ymax": 400}], shown=(1000, 800))
    assert drawn.region == HBB(50, 40, 90, 60)
    as_is = H.draw_region(small, [{"xmin": 10, "ymin": 20, "xmax": 50, "ymax": 40}])  # on the window image
    assert as_is.region == HBB(50, 40, 90, 60)


def test_map_key_changes_with_what_the_map_shows(thermal: Session) -> None:
    key = map_key(thermal, "m")
    assert key and key == map_key(thermal, "m") and map_key(Session(), "m") == ""
    assert map_key(dataclasses.replace(thermal, region=HBB(1, 1, 9, 9)), "m") == key  # not on the map
    found = [Found(Detection("car", HBB(10, 10, 50, 40)), "detect", 1)]
    assert map_key(dataclasses.replace(thermal, found=found), "m") != key
    assert map_key(thermal, "m", basemap=True) != key
    assert map_key(open_demo(Session(), DEMOS["sar-sentinel1"]), "m") != key


def test_every_map_has_the_draw_region_button() -> None:
    page = build_map(np.zeros((10, 20, 3), np.uint8), {"type": "FeatureCollection", "features": []})
    assert "function earthgptRegionDraw" in page and "earthgptRegionDraw(map_" in page
    assert "earthgpt-map-region" in page and "https://" not in page.split("earthgptRegionDraw", 1)[1]


def test_page_assets_are_inline_and_offline() -> None:
    assert page_head().startswith("<style>") and "#annotator" in page_head()
    for script in (page_script(), map_listener(), map_region_script()):
        assert script.strip() and "http" not in script
    assert "trigger('select'" in map_listener()


def test_messages_name_files_not_server_paths() -> None:
    message = "cannot read /tmp/gradio/3fa2b1/scene one.tif: not a raster (see C:\\data\\x\\a.tif)"
    assert for_user(message) == "cannot read scene one.tif: not a raster (see a.tif)"
    assert for_user("bands 4,3,2 of a 1/2 scale image") == "bands 4,3,2 of a 1/2 scale image"


def test_demo_tiles_say_the_tile_set_the_sensor() -> None:
    sar = open_demo(Session(), DEMOS["sar-sentinel1"])
    assert sar.sensor == "sar" and sar.sensor_reason == "set by the demo tile"
    assert "set by the demo tile" in H.info_markdown(sar)
