"""GeoJSON exports across the antimeridian and near the poles (RFC 7946 §3.1.9): every longitude
written lies in [-180, 180], a box across 180° is cut in two at it (never one polygon wrapping the
globe), a box past a pole is left out and listed, a box around a pole is closed through it, a box
wider than a hemisphere keeps its width, and edges the map bends get vertices; in memory (the app's
map) a box stays one polygon whose longitudes run on past 180."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import shapely
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.transform import Affine, from_origin

from earthgpt.box_spaces import raster_to_lonlat
from earthgpt.geometry import HBB, Detection, obb_from_cxcywha
from earthgpt.vector_export import feature_collection, rfc7946_geometry, write_geojson

GEOGRAPHIC = (from_origin(179.5, 10.0, 1 / 1000, 1 / 1000), CRS.from_epsg(4326))
"""A 1000 × 1000 px raster in EPSG:4326 from 179.5°E to 180.5°: column 500 is the antimeridian."""
UTM_60N = (from_origin(760_000, 1_120_000, 100, 100), CRS.from_epsg(32660))
"""A 1000 × 1000 px raster in UTM zone 60N (central meridian 177°E) reaching past 180° at 10°N."""


def _written(tmp_path: Path, raster: tuple[Any, CRS], dets: list[Detection]) -> dict[str, Any]:
    collection = feature_collection(dets, [{}] * len(dets), to_lonlat=raster_to_lonlat(*raster),
                                    raster_size=(1000, 1000))
    write_geojson(tmp_path / "found.geojson", collection)
    return json.loads((tmp_path / "found.geojson").read_text())


def _polygons(geometry: dict[str, Any]) -> list[shapely.Polygon]:
    rings = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    return [shapely.Polygon(polygon[0]) for polygon in rings]


def _check_rfc7946(geometry: dict[str, Any]) -> list[shapely.Polygon]:
    """Every coordinate on the globe, each part counter-clockwise and narrower than a hemisphere."""
    parts = _polygons(geometry)
    for part in parts:
        west, south, east, north = part.bounds
        assert -180 <= west < east <= 180 and -90 <= south < north <= 90
        assert east - west < 180 and part.exterior.is_ccw
    return parts


@pytest.mark.parametrize("raster", [GEOGRAPHIC, UTM_60N], ids=["epsg4326", "utm60n"])
def test_a_box_across_the_antimeridian_is_cut_in_two(tmp_path: Path, raster: tuple[Any, CRS]) -> None:
    to_lonlat = raster_to_lonlat(*raster)
    column = 500 if raster is GEOGRAPHIC else next(c for c in range(1000) if to_lonlat([(c, 500)])[0][0] < 0)
    dets = [Detection("ship", HBB(column - 40, 100, column + 60, 200)),
            Detection("tanker", obb_from_cxcywha(column, 600, 120, 40, 30))]
    in_memory = feature_collection(dets, [{}, {}], to_lonlat=to_lonlat)
    for feature in in_memory["features"]:  # what the app's map draws: one piece, running past 180
        (ring,) = feature["geometry"]["coordinates"]
        lons = [x for x, _ in ring]
        assert feature["geometry"]["type"] == "Polygon" and max(lons) > 180 > min(lons)
    written = _written(tmp_path, raster, dets)
    assert len(written["features"]) == 2 and "skipped" not in written
    for feature, kept in zip(written["features"], in_memory["features"], strict=True):
        assert feature["geometry"]["type"] == "MultiPolygon"
        east, west = sorted(_check_rfc7946(feature["geometry"]), key=lambda p: p.bounds[0])
        assert east.bounds[0] == -180 and west.bounds[2] == 180  # they meet at the antimeridian
        whole = shapely.Polygon(kept["geometry"]["coordinates"][0])
        assert east.area + west.area == pytest.approx(whole.area, rel=1e-6)  # 9 decimals written


def test_boxes_on_one_side_stay_whole_and_in_range(tmp_path: Path) -> None:
    dets = [Detection("west", HBB(100, 100, 400, 300)), Detection("east", HBB(600, 100, 900, 300))]
    written = _written(tmp_path, GEOGRAPHIC, dets)
    west, east = (_check_rfc7946(f["geometry"]) for f in written["features"])
    assert [f["geometry"]["type"] for f in written["features"]] == ["Polygon", "Polygon"]
    assert west[0].bounds == pytest.approx((179.6, 9.7, 179.9, 9.9))
    assert east[0].bounds == pytest.approx((-179.9, 9.7, -179.6, 9.9))  # 180.1–180.4 moved by 360°


def test_a_box_past_the_pole_is_left_out_and_listed(tmp_path: Path) -> None:
    beyond = (from_origin(0.0, 92.0, 0.5, 0.5), CRS.from_epsg(4326))  # rows 0–4 lie past 90°N
    dets = [Detection("cloud", HBB(0, 0, 10, 2)), Detection("ice", HBB(0, 10, 10, 20))]
    written = _written(tmp_path, beyond, dets)
    assert written["skipped"] == [{"class": "cloud",
                                   "reason": "a box has corners past the pole (latitude beyond ±90°)"}]
    (ice,) = written["features"]
    assert _check_rfc7946(ice["geometry"])[0].bounds == pytest.approx((0, 82, 5, 87))


def test_a_polygon_far_past_180_is_moved_by_whole_turns() -> None:
    square = [[530, 0], [535, 0], [535, 5], [530, 5]]
    geometry = rfc7946_geometry({"type": "Polygon", "coordinates": [square]})
    assert geometry["type"] == "Polygon"
    assert _polygons(geometry)[0].bounds == (170, 0, 175, 5)


def _back_on_the_map(geometry: dict[str, Any], crs: str) -> shapely.Geometry:
    """The written lon/lat parts taken vertex by vertex into ``crs`` and joined."""
    move = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform
    return shapely.union_all([shapely.Polygon([move(x, y) for x, y in part.exterior.coords]).buffer(0)
                              for part in _polygons(geometry)])


@pytest.mark.parametrize(("crs", "pixel", "pole"), [("EPSG:3413", 1000, 90), ("EPSG:3031", 250, -90)])
def test_a_box_around_a_pole_is_closed_through_it(tmp_path: Path, crs: str, pixel: int, pole: int) -> None:
    """Review of 2026-12-04: its four corners lie 90° of longitude apart at one latitude, so the
    four-vertex lon/lat ring had no area and the box was left out of the export and the map."""
    transform = Affine(pixel, 0, -100 * pixel, 0, -pixel, 100 * pixel)  # 200 × 200 px, the pole in the middle
    box = HBB(50, 50, 150, 150)
    written = _written(tmp_path, (transform, CRS.from_string(crs)), [Detection("ice", box)])
    assert "skipped" not in written
    (feature,) = written["features"]
    parts = _polygons(feature["geometry"])
    assert all(p.is_valid and p.exterior.is_ccw for p in parts)
    assert max(abs(y) for p in parts for _, y in p.exterior.coords) == 90
    assert {y for p in parts for _, y in p.exterior.coords if abs(y) == 90} == {pole}
    truth = shapely.Polygon([transform @ corner for corner in box.corners()])
    drawn = _back_on_the_map(feature["geometry"], crs)
    assert drawn.symmetric_difference(truth).area < 0.01 * truth.area


def test_a_box_wider_than_a_hemisphere_keeps_its_width(tmp_path: Path) -> None:
    """Review of 2026-12-04: a box from -180° to 28.8° on a global raster came out as its
    complement, since each corner was put within 180° of the one before."""
    world = (from_origin(-180.0, 90.0, 0.36, 0.36), CRS.from_epsg(4326))  # 1000 × 500 px
    written = _written(tmp_path, world, [Detection("storm", HBB(0, 200, 580, 240)),
                                         Detection("band", HBB(0, 300, 1000, 310))])
    assert "skipped" not in written
    storm, band = (shapely.union_all(_polygons(f["geometry"])) for f in written["features"])
    assert storm.bounds == pytest.approx((-180, 3.6, 28.8, 18.0))
    assert storm.area == pytest.approx(208.8 * 14.4)
    assert band.bounds == pytest.approx((-180, -21.6, 180, -18.0)) and band.area == pytest.approx(360 * 3.6)


def test_edges_get_vertices_only_where_the_map_bends(tmp_path: Path) -> None:
    utm = (from_origin(500_000, 5_000_000, 10, 10), CRS.from_epsg(32633))
    (flat,) = _written(tmp_path, utm, [Detection("car", HBB(100, 100, 140, 120))])["features"]
    assert len(flat["geometry"]["coordinates"][0]) == 5  # four corners, closed: files stay small
    polar = Affine(1000, 0, -100_000, 0, -1000, 100_000)  # EPSG:3413, 200 × 200 km around the pole
    box = HBB(95, 60, 140, 98)  # 45 × 38 km beside the pole (not around it)
    (bent,) = _written(tmp_path, (polar, CRS.from_epsg(3413)), [Detection("ice", box)])["features"]
    truth = shapely.Polygon([polar @ corner for corner in box.corners()])
    drawn = _back_on_the_map(bent["geometry"], "EPSG:3413")
    assert drawn.symmetric_difference(truth).area < 0.01 * truth.area  # four vertices gave IoU 0.43
