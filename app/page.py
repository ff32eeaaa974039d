"""The page's own CSS and JavaScript (``assets/web``), handed to Gradio components.

Gradio 6 takes page-wide CSS and JS in ``launch()``, which every launcher (``app.py``, the tests'
servers) would have to repeat. Instead the app's title is a ``gr.HTML`` whose ``head`` carries the
stylesheet and whose ``js_on_load`` sets up the page (:func:`page_head`, :func:`page_script`), so
:func:`app.ui.build` alone makes the whole page. The map's listener (:func:`map_listener`) turns a
rectangle drawn on the map (``map_region.js``, inlined in each map page by :mod:`app.maps`) into a
``select`` event of the map component. Everything is read from disk once; nothing comes from a CDN.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

WEB_DIR = Path(__file__).resolve().parents[1] / "assets" / "web"


@cache
def _asset(name: str) -> str:
    return (WEB_DIR / name).read_text(encoding="utf-8")


def page_head() -> str:
    """The ``<style>`` element of the app's layout (``assets/web/app.css``)."""
    return f"<style>{_asset('app.css')}</style>"


def page_script() -> str:
    """JavaScript run once on page load: keeps the window image inside the viewport."""
    return _asset("page.js")


def map_listener() -> str:
    """JavaScript for the map component: a drawn rectangle → ``trigger('select', …)``."""
    return _asset("map_listener.js")


def map_region_script() -> str:
    """JavaScript inlined in each map page: the "Draw a region" button and its rectangle."""
    return _asset("map_region.js")
