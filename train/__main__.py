"""``python -m train CONFIG.yaml [key=value …]``: run (or resume) one training stage.

On several processes use ``accelerate launch [--config_file train/configs/accelerate/…] -m train
CONFIG.yaml …`` or ``torchrun --nproc_per_node N -m train CONFIG.yaml …`` (see docs/TRAINING.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from train.config import load_config


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description="Train EarthGPT (stage 1 or 2) from a YAML config with dotted key=value overrides.",
    )
    parser.add_argument("config", help="YAML file, e.g. train/configs/nano_stage1.yaml")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override config values, e.g. optim.lr=1e-4 run.output_dir=runs/a",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load and check the config, train; returns the exit status."""
    args = build_parser().parse_intermixed_args(argv)  # overrides before or after --print-config
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config, args.overrides)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    from train.steps import train

    try:
        result = train(config)
    except (ValueError, OSError) as err:  # OSError: a full disk or a lost mount while checkpointing
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
