"""The GIS analyst app: raster I/O, georeferencing, overlays, map, export and the Gradio UI."""
