"""Weighted sums of trained checkpoints: model soups and task-vector extrapolation.

    python -m train.soup runs/soup runs/v4_export=0.5 runs/v5/final=0.5          # the average
    python -m train.soup runs/ext runs/v5/final=1.5 runs/nano_v3_export=-0.5     # past v5, from v3

Each tensor a delta checkpoint holds (projector, tuned attention and norms, scale/shift, adapters)
becomes the weighted sum of the sources' tensors, in float32; the result is written as a delta
checkpoint in ``--dtype`` (default float32, so that scoring it does not round it; ship it with
``python -m train.export_weights``). The weights must sum to 1: an affine combination of
checkpoints fine-tuned from one start stays on the line or plane through them (``A=1.5 B=-0.5``
goes half the way from B to A past A), where any other sum would scale every tensor, norms and
scales included.

The sources must share what makes their tensors comparable: the architecture (config), the stage
and the base components (their identity). A mismatch is refused naming the first source that
differs. One difference is bridged: the projector's 2-D position signal and global context
(``projector.position``, ``projector.context``) start at zero, so a source without one computes
exactly what it computes with the module added at zero; such a source gets it added, as stage 2
adds it to an export (``train/build.py``), and a fine-tune that added it sums with its start
(``python -m train.soup runs/mix assets/earthgpt-nano=0.5 runs/one_object_600/final=0.5``).
Whether a sum is any good is what ``earthgpt eval`` says; docs/EXPERIMENTS.md, "Averaging and
extrapolating checkpoints", has what it gave the nano.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

USAGE = "Write the weighted sum of trained checkpoints: python -m train.soup DST SRC=WEIGHT [SRC=WEIGHT ...]."
DTYPES = ("float32", "bfloat16")


def parse_source(text: str) -> tuple[Path, float]:
    """``FOLDER=WEIGHT`` as a folder and a weight (the last ``=`` splits them)."""
    folder, sep, weight = text.rpartition("=")
    if not sep or not folder:
        raise ValueError(f"{text!r}: expected FOLDER=WEIGHT, e.g. runs/v5/final=0.5")
    try:
        return Path(folder), float(weight)
    except ValueError:
        raise ValueError(f"{text!r}: the weight {weight!r} is not a number") from None


def write_soup(sources: Sequence[tuple[Path, float]], dst: Path, dtype: str = "float32") -> Path:
    """Write ``dst``: the delta checkpoint whose tensors are the weighted sums of the sources'."""
    import torch

    from earthgpt.model.checkpoint import delta_state, load_pretrained, model_base_identity, save_pretrained

    if len(sources) < 2:
        raise ValueError("a soup needs at least two checkpoints")
    total = sum(weight for _, weight in sources)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"the weights sum to {total:g}; they must sum to 1")
    models = [load_pretrained(folder, dtype=torch.float32) for folder, _ in sources]
    _add_zero_modules(models)
    first = models[0]
    for (folder, _), model in zip(sources[1:], models[1:], strict=True):
        if model.config != first.config or model.stage != first.stage:
            raise ValueError(f"{folder}: its architecture or stage differs from {sources[0][0]}'s")
        if model_base_identity(model) != model_base_identity(first):
            raise ValueError(f"{folder}: its base components differ from {sources[0][0]}'s")
    states = [delta_state(model) for model in models]
    weights = [weight for _, weight in sources]
    with torch.no_grad():
        for name, tensor in states[0].items():
            tensor.copy_(sum(w * state[name].float() for w, state in zip(weights, states, strict=True)))
    return save_pretrained(first, dst, delta=True, dtype=getattr(torch, dtype))


def _add_zero_modules(models: Sequence[object]) -> None:
    """Give every model the projector modules that start at zero (position signal, global context)
    which any of them has, added at zero: each model computes what it computed before."""
    from train.build import add_projector_modules

    wanted = {}
    for field in ("position", "context"):
        kinds = {getattr(model.config.projector, field) for model in models} - {"none"}
        # none has it, or they differ in kind (refused below as an architecture mismatch)
        wanted[field] = kinds.pop() if len(kinds) == 1 else "none"
    for model in models:
        own = model.config.projector
        add_projector_modules(
            model, own.position if own.position != "none" else wanted["position"],
            own.context if own.context != "none" else wanted["context"],
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.soup", description=USAGE)
    parser.add_argument("dst", type=Path, help="folder to write")
    parser.add_argument("sources", nargs="+", help="checkpoint folders with their weights, FOLDER=WEIGHT")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    args = parser.parse_args(argv)
    try:
        sources = [parse_source(text) for text in args.sources]
        out = write_soup(sources, args.dst, args.dtype)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    weights = " + ".join(f"{weight:g} × {folder}" for folder, weight in sources)
    print(f"wrote {out} ({weights})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
