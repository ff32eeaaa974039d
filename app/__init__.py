"""The GIS analyst app: session handlers, overlays, map, export and the Gradio UI over the library."""
