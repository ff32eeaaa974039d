"""The EarthGPT model in torch: visual perception, projector, LLM splice, tuning stages, checkpoints.

The main names are importable from here (``from earthgpt.model import EarthGPT``); they load on
first use, so ``import earthgpt.model`` alone stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EarthGPT": "earthgpt.model.earthgpt",
    "apply_stage": "earthgpt.model.tuning",
    "merge_scale_shift": "earthgpt.model.tuning",
    "unmerge_scale_shift": "earthgpt.model.tuning",
    "parameter_report": "earthgpt.model.tuning",
    "save_pretrained": "earthgpt.model.checkpoint",
    "load_pretrained": "earthgpt.model.checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'earthgpt.model' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
