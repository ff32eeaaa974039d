"""Sub-commands of the ``earthgpt`` CLI: one module each, exposing ``add_arguments`` and ``run``."""

from __future__ import annotations

import argparse


def add_quantization_arguments(parser: argparse.ArgumentParser) -> None:
    """``--load-4bit`` / ``--load-8bit`` (one at most): the LLM through bitsandbytes."""
    quant = parser.add_mutually_exclusive_group()
    quant.add_argument("--load-4bit", action="store_true", help="load the LLM in 4 bit (bitsandbytes)")
    quant.add_argument("--load-8bit", action="store_true", help="load the LLM in 8 bit (bitsandbytes)")
