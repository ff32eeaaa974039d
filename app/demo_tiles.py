"""The demo images the app offers out of the box (``assets/demo``, one per sensor; its README gives
sources and licences)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from app.handlers import load_image
from app.session_io import Session
from earthgpt.sensors import Sensor

DEMO_DIR = Path(__file__).resolve().parents[1] / "assets" / "demo"


@dataclass(frozen=True)
class DemoTile:
    """A bundled demo image: its file(s) (a SAR VV file first, then its VH), sensor and description."""

    paths: tuple[Path, ...]
    sensor: Sensor
    description: str


def demo_tiles() -> dict[str, DemoTile]:
    """The demo tiles shipped in ``assets/demo`` (see its README for sources and licences)."""
    sar = "OPERA_L2_RTC-S1_T137-292318-IW1_20250102T015857Z_20250102T190143Z_S1A_30_v1.0_{}.tif"
    return {
        "optical-landsat": DemoTile((DEMO_DIR / "RGB.byte.tif",), Sensor.optical,
                                    "Landsat 7 RGB, 791×718 at 300 m, EPSG:32618 (rasterio test data)"),
        "sar-sentinel1": DemoTile((DEMO_DIR / sar.format("VV"), DEMO_DIR / sar.format("VH")), Sensor.sar,
                                  "Sentinel-1 OPERA RTC γ0, VV + VH, 100×100 at 30 m, EPSG:32611"),
        "infrared-hituav": DemoTile((DEMO_DIR / "hit_uav_0_100_70_0_08234.jpg",), Sensor.infrared,
                                    "HIT-UAV thermal drone frame, 640×512, not georeferenced"),
    }


def open_demo(session: Session, tile: DemoTile) -> Session:
    """Open a demo tile with its sensor. The info says the tile set it: the sensor picker, which
    applies to the analyst's own files, stays as the analyst left it (``auto``: detected)."""
    opened = load_image(session, tile.paths[0], sensor=tile.sensor.value)
    return dataclasses.replace(opened, sensor_reason="set by the demo tile")
