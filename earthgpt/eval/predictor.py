"""Model mode of the evaluation: find a record's image, read it as the model sees it, and ask the
record's questions in one :class:`earthgpt.inference.ChatSession`.

Image files: ``record["image"]`` is a relative POSIX path. It is looked up, in this order, under
the folder given for the record's ``image_root`` (``--image-root NAME=DIR``), under the data
folder, under ``<data folder>/<image_root>``, and under ``$EARTHGPT_DATA/<image_root>``.
Images are read by :func:`earthgpt.imageio.read_image` (Pillow for JPEG/PNG, rasterio decimated
reads and :func:`earthgpt.sensors.to_model_rgb` for GeoTIFFs, with the record's sensor).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from earthgpt.eval.inputs import EvalError, TurnRef

IMAGE_PLACEHOLDER = "<image>"


class ImageResolver:
    """Finds record images on disk (search order in the module doc)."""

    def __init__(self, data_dir: Path | None = None, roots: Mapping[str, Path] | None = None) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.roots = {name: Path(path) for name, path in (roots or {}).items()}

    def candidates(self, record: Mapping[str, Any]) -> list[Path]:
        """Every place the record's image may be, in search order."""
        image = record.get("image")
        if not isinstance(image, str) or not image:
            raise EvalError(f"record {record.get('id')!r} has no 'image' path")
        root = str(record.get("image_root") or "")
        bases: list[Path] = []
        if root in self.roots:
            bases.append(self.roots[root])
        if self.data_dir is not None:
            bases += [self.data_dir, self.data_dir / root] if root else [self.data_dir]
        env = os.environ.get("EARTHGPT_DATA")
        if env and root:
            bases.append(Path(env) / root)
        return [base / image for base in bases]

    def __call__(self, record: Mapping[str, Any]) -> Path:
        tried = self.candidates(record)
        for path in tried:
            if path.is_file():
                return path
        listed = ", ".join(str(p) for p in tried) or "(no search folders: pass --image-root NAME=DIR)"
        raise EvalError(f"image of record {record.get('id')!r} not found; tried {listed}")


def read_rgb(path: Path, sensor: str | None = None) -> np.ndarray:
    """The image at ``path`` as uint8 H×W×3 RGB, as the model sees it
    (:func:`earthgpt.imageio.read_image`: decimated reads, GeoTIFFs through ``to_model_rgb``)."""
    from earthgpt.imageio import read_image

    return read_image(Path(path), sensor)[0]


def question_text(question: str) -> str:
    """A recorded human message as a question to ask: the ``<image>`` placeholder removed."""
    return question.replace(IMAGE_PLACEHOLDER, " ").strip()


class ChatPredictor:
    """``predict_fn`` for :func:`earthgpt.eval.runner.evaluate` backed by a loaded model.

    One chat session per record: the image is encoded once, then the record's selected turns
    are asked in order with greedy decoding (the model sees its own earlier answers).
    """

    def __init__(
        self, model: Any, processor: Any, resolver: ImageResolver, *, max_new_tokens: int = 256
    ) -> None:
        self.model = model
        self.processor = processor
        self.resolver = resolver
        self.max_new_tokens = max_new_tokens

    def __call__(self, record: Mapping[str, Any], turns: Sequence[TurnRef]) -> list[str]:
        from earthgpt.inference import ChatSession

        sensor = record.get("sensor")
        session = ChatSession(self.model, self.processor, sensor=sensor)
        session.set_image(read_rgb(self.resolver(record), sensor))
        limit = self.max_new_tokens
        return [str(session.ask(question_text(t.question), max_new_tokens=limit)) for t in turns]
