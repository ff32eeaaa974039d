"""The map tab: a folium map of the image and its detections that renders with no internet.

folium links Leaflet, jQuery and Bootstrap from CDNs by default. Here each map drops those links
and inlines the vendored Leaflet from ``assets/leaflet`` (its marker and layer images become data
URIs), so the HTML loads nothing from outside. A basemap (OpenStreetMap tiles, online only) is
off unless asked for.

An image with a CRS and an affine transform is reprojected to lon/lat and laid on a web-mercator
map; any other (GCPs only, or no georeferencing) is shown in its own pixel space (Leaflet's
``Simple`` CRS) with its detections in pixels too.

The page fits the map to the image only once its frame has a size. The ``<iframe>`` may have none
when the map script runs: Chromium lays a sandboxed frame out in its own process and tells it its
size later, and a frame in a hidden tab has none until the tab is shown. Leaflet fitted at 0×0
picks zoom 0, where the scene is a pixel and every box a degenerate path.

Each map has a "Draw a region" button (``assets/web/map_region.js``): the box dragged on the map is
posted to the app page (``window.parent``), where :func:`app.map_region.region_from_map` turns it
into the analyst's region. :func:`map_key` says what a map shows, so the app redraws it only when
that changes.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from app.export import session_geojson
from app.overlay import hex_colour
from app.page import map_region_script
from app.session_io import Session
from earthgpt.box_spaces import placed_by_affine
from earthgpt.raster import RasterInfo
from earthgpt.vector_export import skipped_note

LEAFLET_DIR = Path(__file__).resolve().parents[1] / "assets" / "leaflet"
MAP_HEIGHT = 560
FIT_WHEN_SIZED = """
{% macro script(this, kwargs) %}
    (function (map, bounds) {
        function fitIfSized() {
            map.invalidateSize(false);
            var size = map.getSize();
            if (size.x === 0 || size.y === 0) return false;
            map.fitBounds(bounds, {{ this.options|tojson }});
            return true;
        }
        if (fitIfSized()) return;
        var observer = new ResizeObserver(function () { if (fitIfSized()) observer.disconnect(); });
        observer.observe(map.getContainer());
    })({{ this._parent.get_name() }}, {{ this.bounds|tojson }});
{% endmacro %}
"""
"""folium's ``fitBounds`` script, run now when the map has a size, else at its first non-zero size."""
DRAW_REGION = """
{% macro script(this, kwargs) %}
    earthgptRegionDraw({{ this._parent.get_name() }});
{% endmacro %}
"""
"""Adds the "Draw a region" button (``map_region.js``) to the map."""


@cache
def leaflet_assets() -> tuple[str, str]:
    """The vendored ``leaflet.js`` and ``leaflet.css`` texts, the CSS with its images inlined."""
    js = (LEAFLET_DIR / "leaflet.js").read_text(encoding="utf-8")
    css = (LEAFLET_DIR / "leaflet.css").read_text(encoding="utf-8")
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.DOTALL)  # comments hold bug-tracker URLs

    def inline(match: re.Match[str]) -> str:
        data = (LEAFLET_DIR / "images" / match.group(1)).read_bytes()
        return f"url(data:image/png;base64,{base64.b64encode(data).decode()})"

    return js, re.sub(r"url\(images/([\w.-]+\.png)\)", inline, css)


def _offline_map(**kwargs: Any) -> Any:
    import folium
    from branca.element import Element

    fmap = folium.Map(zoom_snap=0.25, **kwargs)  # quarter zoom steps: the image fills the frame
    fmap.default_js = []  # instance attributes: folium's class-level CDN lists stay untouched
    fmap.default_css = []
    js, css = leaflet_assets()
    header = fmap.get_root().header
    header.add_child(Element(f"<style>{css}</style>"), name="leaflet_css")
    header.add_child(Element(f"<script>{js}</script>"), name="leaflet")
    header.add_child(Element(f"<script>{map_region_script()}</script>"), name="earthgpt_region")
    return fmap


def _add_region_drawing(fmap: Any) -> None:
    from branca.element import MacroElement
    from folium.template import Template

    draw = MacroElement()
    draw._template = Template(DRAW_REGION)
    draw.add_to(fmap)


def _style(feature: dict[str, Any]) -> dict[str, Any]:
    colour = hex_colour(str(feature["properties"].get("class", "")))
    return {"color": colour, "weight": 2, "fillColor": colour, "fillOpacity": 0.15}


def _detections_layer(collection: dict[str, Any]) -> Any:
    import folium

    layer = folium.FeatureGroup(name="Detections")
    if collection["features"]:
        folium.GeoJson(
            collection, style_function=_style,
            tooltip=folium.GeoJsonTooltip(fields=["class", "box", "turn"], aliases=["class", "box", "turn"]),
        ).add_to(layer)
    return layer


ACROSS_180 = "+proj=longlat +datum=WGS84 +lon_wrap=180 +type=crs"
"""Lon/lat on WGS 84 with longitudes in [0, 360): the map's frame for a raster across the antimeridian."""


@cache
def _outline_lonlat(transform: tuple[float, ...], crs: str, width: int,
                    height: int) -> tuple[tuple[float, float], ...]:
    """The outline of a ``width`` × ``height`` raster on the globe (:func:`lonlat_ring`), or ``()``
    when it cannot be placed there."""
    from earthgpt.box_spaces import GeoreferenceError, lonlat_ring, raster_to_lonlat

    to_lonlat = raster_to_lonlat(transform, crs)
    if to_lonlat is None:
        return ()
    try:
        return tuple(lonlat_ring([(0, 0), (width, 0), (width, height), (0, height)], to_lonlat))
    except (GeoreferenceError, ValueError):
        return ()


def _lonlat_frame(transform: Any, crs: str, width: int, height: int) -> str:
    """EPSG:4326, or :data:`ACROSS_180` when the raster's outline crosses the antimeridian (in
    EPSG:4326 its overlay would be warped into a strip round the whole globe). A raster around a
    pole keeps EPSG:4326 (the map shows it in its pixels: :func:`on_globe`)."""
    ring = _outline_lonlat(tuple(transform)[:6], str(crs), width, height)
    if not ring or any(abs(lat) >= 90 for _, lat in ring):
        return "EPSG:4326"
    lons = [lon for lon, _ in ring]
    return ACROSS_180 if min(lons) < -180 or max(lons) > 180 else "EPSG:4326"


def _into_frame(collection: dict[str, Any], centre: float) -> dict[str, Any]:
    """Lon/lat features moved by whole turns to lie within 180° of longitude ``centre`` (the
    overlay's), so that a map in :data:`ACROSS_180` draws them over the image."""
    features = []
    for feature in collection["features"]:
        if feature["geometry"]["type"] != "Polygon":
            features.append(feature)
            continue
        rings = feature["geometry"]["coordinates"]
        lons = [x for ring in rings for x, _ in ring]
        turns = round((sum(lons) / max(len(lons), 1) - centre) / 360.0)
        moved = [[[x - 360.0 * turns, y] for x, y in ring] for ring in rings]
        features.append({**feature, "geometry": {**feature["geometry"], "coordinates": moved}})
    return {**collection, "features": features}


def _reproject_to_lonlat(rgb: np.ndarray, transform: Any, crs: str) -> tuple[np.ndarray, list[list[float]]]:
    """An RGB image in its CRS → RGBA in lon/lat (transparent outside) and its [[S, W], [N, E]]:
    EPSG:4326, or longitudes in [0, 360) for a raster across the antimeridian (:func:`_lonlat_frame`)."""
    from rasterio.transform import array_bounds
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    height, width = rgb.shape[:2]
    west, south, east, north = array_bounds(height, width, transform)
    frame = _lonlat_frame(transform, crs, width, height)
    dst_transform, dst_w, dst_h = calculate_default_transform(crs, frame, width, height,
                                                              left=west, bottom=south, right=east, top=north)
    alpha = np.where(rgb.any(axis=-1), 255, 0).astype(np.uint8)[np.newaxis]  # nodata is drawn black
    source = np.concatenate([np.moveaxis(rgb, -1, 0), alpha])
    out = np.zeros((4, dst_h, dst_w), np.uint8)
    reproject(source, out, src_transform=transform, src_crs=crs, dst_transform=dst_transform,
              dst_crs=frame, resampling=Resampling.nearest, dst_nodata=0)
    w, s, e, n = array_bounds(dst_h, dst_w, dst_transform)
    return np.moveaxis(out, 0, -1), [[s, w], [n, e]]


def build_map(
    overview: np.ndarray,
    detections: dict[str, Any],
    *,
    transform: Any = None,
    crs: str | None = None,
    raster_size: tuple[int, int] | None = None,
    basemap: bool = False,
) -> str:
    """A self-contained HTML page: the overview image and the detections as a vector layer.

    ``overview`` is the display RGB of the whole raster; ``transform`` is the affine of *that
    overview* (full-raster transform scaled to it) and ``crs`` its CRS. ``detections`` is a GeoJSON
    FeatureCollection: lon/lat when georeferenced, else full-raster pixels and ``raster_size``
    (width, height) gives the pixel extent.
    """
    import folium

    if transform is not None and crs:
        image, bounds = _reproject_to_lonlat(overview, transform, crs)
        fmap = _offline_map(tiles="OpenStreetMap" if basemap else None, control_scale=True)
        overlay = folium.raster_layers.ImageOverlay(image, bounds=bounds, name="Image", mercator_project=True)
        overlay.add_to(fmap)
        _detections_layer(_into_frame(detections, (bounds[0][1] + bounds[1][1]) / 2)).add_to(fmap)
    else:
        width, height = raster_size or (overview.shape[1], overview.shape[0])
        bounds = [[-height, 0], [0, width]]
        fmap = _offline_map(crs="Simple", tiles=None, min_zoom=-5, zoom_start=0)
        folium.raster_layers.ImageOverlay(overview, bounds=bounds, name="Image").add_to(fmap)
        _detections_layer(_flip_y(detections)).add_to(fmap)
    folium.LayerControl(collapsed=False).add_to(fmap)
    _fit_when_sized(fmap, bounds)
    _add_region_drawing(fmap)
    return fmap.get_root().render()


def _fit_when_sized(fmap: Any, bounds: list[list[float]]) -> None:
    """``fmap.fit_bounds(bounds)``, deferred until the map's container has a size (see the module notes)."""
    from folium.map import FitBounds
    from folium.template import Template

    fit = FitBounds(bounds)
    fit._template = Template(FIT_WHEN_SIZED)  # an instance attribute: folium's class stays untouched
    fit.add_to(fmap)


def _flip_y(collection: dict[str, Any]) -> dict[str, Any]:
    """Pixel-space features (y down) → Leaflet ``Simple`` CRS coordinates (y up)."""
    features = []
    for feature in collection["features"]:
        rings = [[[x, -y] for x, y in ring] for ring in feature["geometry"]["coordinates"]]
        features.append({**feature, "geometry": {"type": "Polygon", "coordinates": rings}})
    return {**collection, "features": features}


def map_iframe(page: str, height: int = MAP_HEIGHT) -> str:
    """Wrap a map page in an ``<iframe srcdoc>`` so it runs isolated inside the Gradio page."""
    return (f'<iframe title="map" srcdoc="{html.escape(page, quote=True)}" '
            f'style="width:100%;height:{height}px;border:0" sandbox="allow-scripts"></iframe>')


WEB_MERCATOR_MAX_LAT = 85.0511287798066
"""Web Mercator, the projection of the map, ends at this latitude north and south."""


POLAR_NOTE = ('<p class="map-note">The map shows this raster in its own pixels: it reaches past 85° of '
              "latitude, where the web map's projection (Web Mercator) ends. GeoJSON and GeoPackage "
              "exports keep their map coordinates.</p>")


def on_globe(info: RasterInfo) -> bool:
    """Whether the map shows the raster on the globe: it needs a CRS and an affine transform, and
    an outline within Web Mercator's latitudes. A raster placed only by GCPs, or not at all, is
    shown in its own pixel space, and so are its detections (pixel-space features, never lon/lat
    drawn as pixels); so is a polar raster (:func:`past_web_mercator`)."""
    return placed_by_affine(info.transform, info.crs) and not past_web_mercator(info)


def past_web_mercator(info: RasterInfo) -> bool:
    """Whether a raster placed by its affine reaches past ±85.05° of latitude, or around a pole,
    where the map cannot draw it (review of 2026-12-04: an Arctic scene was warped into a band
    round the whole map, cut at 85°)."""
    if not placed_by_affine(info.transform, info.crs):
        return False
    ring = _outline_lonlat(tuple(info.transform)[:6], str(info.crs), info.width, info.height)
    return any(abs(lat) > WEB_MERCATOR_MAX_LAT for _, lat in ring)


def map_key(session: Session, model_name: str = "", basemap: bool = False) -> str:
    """A digest of what :func:`session_map` draws (image, its display, detections, basemap): the
    map needs redrawing exactly when it changes. ``""`` when no image is loaded."""
    if session.info is None or session.overview is None:
        return ""
    on_map = session_geojson(session, model_name, pixel_space=not on_globe(session.info))
    shown = [session.path, session.sensor, session.bands, basemap, on_map, bool(session.overview_builds)]
    return hashlib.sha256(json.dumps(shown, sort_keys=True, default=str).encode()).hexdigest()


def session_map(session: Session, model_name: str = "", basemap: bool = False) -> str:
    """The map tab's HTML (an iframe) for a session; a hint when no image is loaded."""
    if session.info is None or session.overview is None:
        return "<p>Load an image to see it on the map.</p>"
    info = session.info
    if not on_globe(info):  # no CRS + affine (GCPs only, or nothing), or polar: in its pixel space
        collection = session_geojson(session, model_name, pixel_space=True)
        page = build_map(session.overview, collection, raster_size=(info.width, info.height))
    else:
        from rasterio.transform import Affine

        sx, sy = session.overview_scale
        transform = Affine(*info.transform[:6]) @ Affine.scale(sx, sy)
        collection = session_geojson(session, model_name)
        page = build_map(session.overview, collection, transform=transform, crs=info.crs, basemap=basemap)
    return map_iframe(page) + _skipped_html(collection) + (POLAR_NOTE if past_web_mercator(info) else "")


def _skipped_html(collection: dict[str, Any]) -> str:
    """A line under the map naming the detections it could not draw (``""`` when it drew them all)."""
    note = skipped_note(collection.get("skipped", []))
    return f'<p class="map-note">⚠ Not on the map: {html.escape(note)}</p>' if note else ""
