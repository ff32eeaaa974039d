"""Throughput of one process over a logging window: tokens/s, samples/s, model TFLOP/s.

The loop sums these over processes and divides model FLOP/s by the peak to get MFU
(formula in ``train/flops.py``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from train.flops import FlopModel


class Throughput:
    """Accumulates this process's tokens, samples and model FLOPs between :meth:`read` calls."""

    def __init__(self, flops: FlopModel | None, peak_tflops: float | None) -> None:
        self.flops = flops
        self.peak_tflops = peak_tflops
        self._start = time.perf_counter()
        self.tokens = self.samples = 0
        self.model_flops = 0.0

    def add(self, tokens: int, samples: int, visual_tokens: int, seq_len: int, images_encoded: int) -> None:
        """Count one micro-batch of this process."""
        self.tokens += tokens
        self.samples += samples
        if self.flops is not None:
            self.model_flops += self.flops.step_flops(tokens, visual_tokens, seq_len, images_encoded)

    def read(self) -> dict[str, float]:
        """Rates since the last read (or creation); resets the window."""
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        out = {"tokens_per_s": self.tokens / elapsed, "samples_per_s": self.samples / elapsed}
        if self.flops is not None:
            out["model_tflops_per_s"] = self.model_flops / elapsed / 1e12
        self._start = time.perf_counter()
        self.tokens = self.samples = 0
        self.model_flops = 0.0
        return out


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON line (the run's ``metrics.jsonl``)."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")
