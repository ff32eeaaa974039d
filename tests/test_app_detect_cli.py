"""``earthgpt detect`` against the app: the same pixel → lon/lat mapping (GCP rasters too), clear
failures with exit status 2, the VV → VH pairing and ``--bands``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from app import handlers as H
from app.export import session_geojson
from app.session_io import Found, Session
from earthgpt.commands import detect as detect_cmd


class OneShip:
    """Answers one ship over the middle of whatever tile it is shown."""

    def set_image(self, rgb: np.ndarray) -> None:
        self.image = rgb

    def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False) -> str:
        return "ship [250, 250, 750, 750]"


SMALL = ("--sensor", "optical", "--tile", "64", "--overlap", "0")


def _args(image: Path, out: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    detect_cmd.add_arguments(parser)
    return parser.parse_args([str(image), "--out", str(out), *extra])


def test_cli_and_app_export_a_gcp_raster_in_the_same_lonlat(fixtures_dir: Path, tmp_path: Path) -> None:
    image = fixtures_dir / "gcps.tif"
    out = tmp_path / "gcps.geojson"
    result, _ = detect_cmd.detect_file(_args(image, out, *SMALL),
                                       lambda s: OneShip(), "scripted")
    cli = json.loads(out.read_text())
    assert "note" not in cli and len(cli["features"]) == 1
    ring = cli["features"][0]["geometry"]["coordinates"][0]
    assert all(12.3 < lon < 12.6 and 41.8 < lat < 42.0 for lon, lat in ring)  # lon/lat, not pixels
    session = H.load_image(Session(), image, sensor="optical")
    session = Session(**{**session.__dict__, "found": [Found(result.detections[0], "p", None, "scene")]})
    app = session_geojson(session, "scripted")
    assert app["features"][0]["geometry"]["coordinates"] == cli["features"][0]["geometry"]["coordinates"]


def test_cli_gpkg_of_a_gcp_raster_is_in_the_gcp_crs(fixtures_dir: Path, tmp_path: Path) -> None:
    import pyogrio

    out = tmp_path / "gcps.gpkg"
    detect_cmd.detect_file(_args(fixtures_dir / "gcps.tif", out, *SMALL),
                           lambda s: OneShip(), "scripted")
    info = pyogrio.read_info(out)
    assert info["crs"] == "EPSG:4326"
    west, south, east, north = info["total_bounds"]
    assert 12.4 < west < east < 12.53 and 41.86 < south < north < 41.96
