"""Model mode of the evaluation: find a record's image, read it as the model sees it, and ask the
record's questions in one :class:`earthgpt.inference.ChatSession`.

Image files are found by :class:`earthgpt.data.image_resolver.ImageResolver` (the search order
training uses too).
Images are read by :func:`earthgpt.raster.model_image` with the record's sensor, as chat and
training read them. Answers are decoded as the product decodes them: a task may have a stop rule
(``earthgpt eval`` gives detection the rule ``earthgpt detect`` and the app use, which ends an
answer that starts repeating or sliding one box), and :attr:`ChatPredictor.stopped` counts the
answers each rule ended.
"""

from __future__ import annotations

from collections import Counter
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
        stop_rules: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.processor = processor
        self.resolver = resolver
        self.max_new_tokens = max_new_tokens
        self.stop_rules = dict(stop_rules or {})
        self.stopped: Counter[str] = Counter()
        """Answers ended by their task's stop rule, by task."""

    def __call__(self, record: Mapping[str, Any], turns: Sequence[RecordTurn]) -> list[str]:
        from earthgpt.inference import ChatSession

        sensor = record.get("sensor")
        session = ChatSession(self.model, self.processor, sensor=sensor)
        session.set_image(read_rgb(self.resolver(record), sensor))
        answers = []
        for turn in turns:
            answer = session.ask(turn.question, max_new_tokens=self.max_new_tokens,
                                 stop_rule=self.stop_rules.get(turn.task))
            answers.append(str(answer))
            if session.finish_reason == "rule":
                self.stopped[turn.task] += 1
        return answers
