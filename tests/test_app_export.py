"""GeoJSON (RFC 7946) and GeoPackage export of a session, and the offline folium map."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pyogrio
import pytest
import shapely

from app import handlers as H
from app.export import export_geojson, export_gpkg
from app.maps import LEAFLET_DIR, build_map, leaflet_assets, session_map
from app.session_io import Found, Session
from earthgpt.geometry import HBB, Detection, obb_from_cxcywha

PROPERTIES = {"class", "score", "box", "angle", "prompt", "turn", "model", "source"}


@pytest.fixture
def session(shared_data: Path) -> Session:
    loaded = H.load_image(Session(), shared_data / "geotiff" / "optical" / "RGB.byte.tif")
    found = [Found(Detection("ship", HBB(100, 120, 180, 200)), "Detect all objects", 1),
             Found(Detection("plane", obb_from_cxcywha(400, 300, 80, 30, 35), 0.9), "Detect all objects", 1),
             Found(Detection("tank", HBB(10, 10, 30, 30)), "scene prompt", None, "scene")]
    return Session(**{**loaded.__dict__, "found": found})


def _signed_area(ring: list[list[float]]) -> float:
    return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in itertools.pairwise(ring)) / 2


def validate_rfc7946(data: dict) -> None:
    """The parts of RFC 7946 our writer must meet: structure, lon/lat ranges, closed CCW rings."""
    assert data["type"] == "FeatureCollection" and "crs" not in data
    for feature in data["features"]:
        assert feature["type"] == "Feature" and set(feature["properties"]) >= PROPERTIES
        geometry = feature["geometry"]
        assert geometry["type"] == "Polygon"
        (ring,) = geometry["coordinates"]
        assert len(ring) >= 4 and ring[0] == ring[-1]
        assert all(-180 <= lon <= 180 and -90 <= lat <= 90 for lon, lat in ring)
        assert _signed_area(ring) > 0  # exterior ring counter-clockwise (section 3.1.6)
        assert shapely.Polygon(ring).is_valid


def test_geojson_is_rfc7946_with_all_properties(session: Session, tmp_path: Path) -> None:
    path, note = export_geojson(session, tmp_path, "nano")
    data = json.loads(path.read_text())
    validate_rfc7946(data)
    assert "3 detections" in note and "note" not in data
    by_class = {f["properties"]["class"]: f["properties"] for f in data["features"]}
    assert by_class["plane"]["box"] == "obb" and by_class["plane"]["angle"] == pytest.approx(35, abs=1e-6)
    assert by_class["plane"]["score"] == 0.9 and by_class["ship"]["score"] is None
    assert by_class["ship"]["turn"] == 1 and by_class["tank"]["turn"] is None
    assert {p["model"] for p in by_class.values()} == {"nano"}
    assert {p["source"] for p in by_class.values()} == {"RGB.byte.tif"}
    lon, lat = data["features"][0]["geometry"]["coordinates"][0][0]
    assert -80 < lon < -76 and 23 < lat < 26  # Landsat scene over the Bahamas / Florida


def test_gpkg_reopens_in_native_crs(session: Session, tmp_path: Path) -> None:
    path, _ = export_gpkg(session, tmp_path, "nano")
    info = pyogrio.read_info(path)
    assert info["crs"] == "EPSG:32618" and info["features"] == 3 and info["geometry_type"] == "Polygon"
    assert set(info["fields"]) >= PROPERTIES
    _, _, geometry, _fields = pyogrio.raw.read(path)
    ship = shapely.from_wkb(geometry[0])
    a, _b, c, _d, e, f = session.info.transform
    assert ship.bounds == pytest.approx((c + 100 * a, f + 200 * e, c + 180 * a, f + 120 * e))
    export_gpkg(session, tmp_path, "nano")  # overwriting works
    assert pyogrio.read_info(path)["features"] == 3


def test_map_html_loads_nothing_from_outside(session: Session) -> None:
    html_page = session_map(session, "nano")
    js, css = leaflet_assets()
    assert "srcdoc=" in html_page
    import html as html_lib

    page = html_lib.unescape(html_page.split('srcdoc="', 1)[1].rsplit('"', 1)[0])
    assert js in page and "L.imageOverlay" in page and "L.geoJson" in page
    outside = page.replace(js, "")
    assert not re.findall(r"https?://", outside), re.findall(r"https?://[^\s\"']+", outside)[:5]
    assert not re.findall(r"https?://(?!leafletjs\.com|www\.w3\.org/2000/svg)", js)  # only links, no loads
    assert "url(images/" not in css and "data:image/png;base64," in css


def test_map_with_basemap_is_opt_in(session: Session) -> None:
    from rasterio.transform import Affine

    sx, sy = session.overview_scale
    transform = Affine(*session.info.transform[:6]) @ Affine.scale(sx, sy)
    online = build_map(session.overview, {"type": "FeatureCollection", "features": []},
                       transform=transform, crs=session.info.crs, basemap=True)
    assert "tile.openstreetmap.org" in online


def test_map_without_crs_uses_pixel_space(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    png = tmp_path / "frame.png"
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(png)
    session = H.load_image(Session(), png)
    session = Session(**{**session.__dict__, "found": [Found(Detection("car", HBB(1, 2, 10, 20)), "p", 1)]})
    page = session_map(session)
    assert "L.CRS.Simple" in page and "-20" in page


def test_vendored_leaflet_with_licence() -> None:
    assert (LEAFLET_DIR / "LICENSE").read_text().startswith("BSD 2-Clause License")
    assert "Leaflet 1.9.4" in (LEAFLET_DIR / "leaflet.js").read_text()[:200]


def test_map_of_a_gcp_raster_draws_boxes_in_its_pixel_space(fixtures_dir: Path) -> None:
    import html as html_lib

    session = H.load_image(Session(), fixtures_dir / "gcps.tif", sensor="optical")
    assert session.info.crs is None and session.info.gcps
    session = Session(**{**session.__dict__, "found": [Found(Detection("car", HBB(11, 7, 23, 19)), "p", 1)]})
    page = html_lib.unescape(session_map(session))
    assert "L.CRS.Simple" in page
    rings = re.findall(r'"coordinates": \[(\[\[.*?\]\])\]', page)
    assert len(rings) == 1
    points = json.loads(rings[0])
    assert sorted({tuple(p) for p in points}) == [(11, -19), (11, -7), (23, -19), (23, -7)]  # y flipped


def test_map_of_a_raster_across_the_antimeridian_draws_it_and_its_boxes_together() -> None:
    """Review of 2026-12-04: in EPSG:4326 a UTM 60N raster from 179.4°E to 179.6°W was warped into
    a strip one pixel tall round the whole globe, and its boxes (at -179.8°) were drawn 360° away."""
    import numpy as np
    from rasterio.transform import Affine

    from app.maps import _into_frame, _reproject_to_lonlat
    from earthgpt.box_spaces import raster_to_lonlat
    from earthgpt.vector_export import feature_collection

    transform = Affine(100, 0, 620_000, 0, -100, 7_000_000)  # 500 × 400 px of 100 m, near 63°N
    image, [[south, west], [north, east]] = _reproject_to_lonlat(np.full((400, 500, 3), 200, np.uint8),
                                                                transform, "EPSG:32660")
    assert 179.3 < west < 180 < east < 180.4 and 62.7 < south < north < 63.2
    assert (image[..., 3] > 0).mean() > 0.8  # the raster itself, not a sliver of it
    boxes = feature_collection([Detection("ship", HBB(400, 150, 450, 250))], [{}],
                               to_lonlat=raster_to_lonlat(transform, "EPSG:32660"))
    (ring,) = boxes["features"][0]["geometry"]["coordinates"]
    assert max(x for x, _ in ring) < -179
    (moved,) = _into_frame(boxes, (west + east) / 2)["features"][0]["geometry"]["coordinates"]
    assert [(x - 360, y) for x, y in moved] == [tuple(p) for p in ring]  # the same place, one turn on
    assert all(west < x < east and south < y < north for x, y in moved)
    # a raster away from 180° keeps EPSG:4326 and its boxes stay as they are
    utm33 = Affine(10, 0, 500_000, 0, -10, 5_000_000)
    _, [[_, w33], [_, e33]] = _reproject_to_lonlat(np.full((40, 50, 3), 9, np.uint8), utm33, "EPSG:32633")
    assert 14 < w33 < e33 < 16
    near = feature_collection([Detection("car", HBB(1, 1, 9, 9))], [{}],
                              to_lonlat=raster_to_lonlat(utm33, "EPSG:32633"))
    assert _into_frame(near, (w33 + e33) / 2) == near


def test_map_of_a_polar_raster_draws_it_in_its_pixels_and_says_why(tmp_path: Path) -> None:
    """Review of 2026-12-04: a raster around the North Pole was warped into lon/lat, a band round
    the whole map cut at Web Mercator's 85°, with its boxes stretched along it. It is drawn in its
    own pixels now, as a raster without a CRS is, and a box drawn on that map is read in pixels too."""
    import html as html_lib

    import numpy as np
    import rasterio
    from rasterio.transform import Affine

    from app.map_region import map_box_to_raster
    from app.maps import on_globe, past_web_mercator

    def polar(name: str, x0: float) -> Session:
        path = tmp_path / name
        with rasterio.open(path, "w", driver="GTiff", width=200, height=200, count=3, dtype="uint8",
                           crs="EPSG:3413", transform=Affine(1000, 0, x0, 0, -1000, 100_000)) as dst:
            dst.write(np.random.default_rng(0).integers(1, 255, (3, 200, 200), dtype=np.uint8))
        return H.load_image(Session(), path, sensor="optical")

    around = polar("pole.tif", -100_000)  # 200 × 200 km with the pole in the middle
    assert past_web_mercator(around.info) and not on_globe(around.info)
    around = Session(**{**around.__dict__, "found": [Found(Detection("ship", HBB(11, 7, 23, 19)), "p", 1)]})
    html_page = session_map(around)
    page = html_lib.unescape(html_page)
    assert "L.CRS.Simple" in page and "past 85° of latitude" in html_page
    rings = re.findall(r'"coordinates": \[(\[\[.*?\]\])\]', page)
    assert sorted({tuple(p) for p in json.loads(rings[0])}) == [(11, -19), (11, -7), (23, -19), (23, -7)]
    assert map_box_to_raster(around.info, -19, 11, -7, 23) == HBB(11, 7, 23, 19)
    far = polar("far.tif", 2_000_000)  # 2,000 km from the pole along the x axis: about 72°N
    assert not past_web_mercator(far.info) and on_globe(far.info)
    assert "past 85°" not in session_map(far) and "L.CRS.Simple" not in html_lib.unescape(session_map(far))
