"""EarthGPT: a universal multimodal LLM for remote-sensing images (optical, SAR, infrared).

The library holds the model, its text formats, data converters, metrics and inference.
It never imports the app (``app/``) or the training package (``train/``).
"""

__version__ = "0.1.0"
