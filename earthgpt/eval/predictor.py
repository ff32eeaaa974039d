"""Model mode of the evaluation: find a record's image, read it as the model sees it, and ask the
record's questions in one :class:`earthgpt.inference.ChatSession`.

Image files are found by :class:`earthgpt.data.image_resolver.ImageResolver` (the search order
training uses too).
Images are read by :func:`earthgpt.raster.model_image` with the record's sensor, as chat and
training read them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from earthgpt.data.mmrs_reader import RecordTurn


def read_rgb(path: Path, sensor: str | None = None) -> np.ndarray:
    """The image at ``path`` as uint8 H×W×3 RGB, as the model sees it
    (:func:`earthgpt.raster.model_image`: a decimated read, the one model-input pipeline)."""
    from earthgpt.raster import model_image

    return model_image(Path(path), sensor)[0]


class ChatPredictor:
    """``predict_fn`` for :func:`earthgpt.eval.runner.evaluate` backed by a loaded model.

    One chat session per record: the image is encoded once, then the record's selected turns
    are asked in order with greedy decoding (the model sees its own earlier answers).
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        resolver: Callable[[Mapping[str, Any]], Path],
        *,
        max_new_tokens: int = 256,
    ) -> None:
        self.model = model
        self.processor = processor
        self.resolver = resolver
        self.max_new_tokens = max_new_tokens

    def __call__(self, record: Mapping[str, Any], turns: Sequence[RecordTurn]) -> list[str]:
        from earthgpt.inference import ChatSession

        sensor = record.get("sensor")
        session = ChatSession(self.model, self.processor, sensor=sensor)
        session.set_image(read_rgb(self.resolver(record), sensor))
        limit = self.max_new_tokens
        return [str(session.ask(t.question, max_new_tokens=limit)) for t in turns]
