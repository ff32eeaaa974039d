"""The ``earthgpt`` command: a thin dispatcher over :mod:`earthgpt.commands`.

Each sub-command lives in its own module with two functions,
``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only when
their command runs, so ``earthgpt --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "chat": ("earthgpt.commands.chat", "answer one prompt about one image"),
    "detect": ("earthgpt.commands.detect", "whole-scene tiled detection to GeoJSON / GeoPackage"),
    "mmrs": ("earthgpt.commands.mmrs", "build the MMRS unified instruction set"),
    "eval": ("earthgpt.commands.eval", "score a model or saved predictions on an MMRS set"),
    "baselines": ("earthgpt.commands.baselines", "prior and linear-probe baselines on an MMRS set"),
    "weights": ("earthgpt.commands.weights", "prepare the offline base components"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="earthgpt", description="EarthGPT: chat with, detect in, and evaluate on remote-sensing images.",
        epilog="`earthgpt COMMAND --help` gives a command's options; README.md has examples.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        parser = build_parser()
        if not argv or argv[0] in ("-h", "--help"):
            parser.print_help()
            return 0 if argv else 2
        parser.error(f"unknown command {argv[0]!r}; expected one of: {', '.join(COMMANDS)}")
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"earthgpt {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
