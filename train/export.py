"""Export a trained checkpoint as the small delta that ships: ``python -m train.export SRC DST``.

Reads a checkpoint folder (e.g. ``runs/nano_cpu_stage2/final``), and writes a delta checkpoint
(only what differs from the base components, with their identity) in ``--dtype`` (default
bfloat16, half the size of float32) to ``DST``; prints its size and refuses to write more than
``--max-mb`` (the repository's budget for shipped weights is 40 MB).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

DTYPES = ("bfloat16", "float16", "float32")


def main(argv: Sequence[str] | None = None) -> int:
    """Export SRC to DST; returns the exit status (2 when the delta is over budget)."""
    parser = argparse.ArgumentParser(prog="python -m train.export", description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="checkpoint folder to export")
    parser.add_argument("dst", type=Path, help="folder to write (replaced)")
    parser.add_argument("--dtype", choices=DTYPES, default="bfloat16")
    parser.add_argument("--max-mb", type=float, default=40.0, help="size budget of the written folder")
    args = parser.parse_args(argv)

    import torch

    from earthgpt.model.checkpoint import load_pretrained, save_pretrained

    model = load_pretrained(args.src)
    args.dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dst.parent) as tmp:
        out = save_pretrained(model, Path(tmp) / "out", delta=True, dtype=getattr(torch, args.dtype))
        size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
        if size_mb > args.max_mb:
            budget = f"{args.max_mb:.0f} MB"
            print(f"error: the delta is {size_mb:.1f} MB, over the {budget} budget", file=sys.stderr)
            return 2
        if args.dst.exists():
            shutil.rmtree(args.dst)
        out.rename(args.dst)
    print(f"wrote {args.dst} ({size_mb:.1f} MB, {args.dtype}, stage {model.stage})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
