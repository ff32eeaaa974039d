"""Exporting trained weights: a run's final delta, and the small delta that ships.

:func:`export_final` writes ``<output_dir>/final`` at the end of a run, from the whole tensors that
every process gathers onto the main one (under FSDP and ZeRO-3 no process holds them otherwise).

``python -m train.export_weights SRC DST`` reads a checkpoint folder (e.g.
``runs/nano_cpu_stage2/final``, or a training checkpoint such as
``runs/nano_cpu_stage2/checkpoints/step-00000100``: the run's ``train_config.yaml`` rebuilds the
model, the step's trainable tensors are copied in), and writes a delta checkpoint (only what
differs from the base components, with their identity) in ``--dtype`` (default bfloat16, half the
size of float32) to ``DST``; prints its size and refuses to write more than ``--max-mb`` (the
repository's budget for shipped weights is 40 MB).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from earthgpt.model.earthgpt import EarthGPT
    from train.run import Run

DTYPES = ("bfloat16", "float16", "float32")
USAGE = "Export a trained checkpoint as the small delta that ships: python -m train.export_weights SRC DST."


def main(argv: Sequence[str] | None = None) -> int:
    """Export SRC to DST; returns the exit status (2 when the delta is over budget)."""
    parser = argparse.ArgumentParser(prog="python -m train.export_weights", description=USAGE)
    parser.add_argument("src", type=Path, help="checkpoint folder to export")
    parser.add_argument("dst", type=Path, help="folder to write (replaced)")
    parser.add_argument("--dtype", choices=DTYPES, default="bfloat16")
    parser.add_argument("--max-mb", type=float, default=40.0, help="size budget of the written folder")
    args = parser.parse_args(argv)

    import torch

    from earthgpt.model.checkpoint import load_pretrained, save_pretrained
    from train.checkpoints import TRAINABLE

    tokenizer = None
    if (args.src / TRAINABLE).is_file() and not (args.src / "config.json").is_file():
        try:
            model, tokenizer = model_at_step(args.src)
        except (FileNotFoundError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    else:
        model = load_pretrained(args.src)
    args.dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dst.parent) as tmp:
        out = save_pretrained(model, Path(tmp) / "out", delta=True, dtype=getattr(torch, args.dtype))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(out / "tokenizer"))
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


def model_at_step(folder: Path) -> tuple[EarthGPT, Any]:
    """The model and tokenizer of a training checkpoint ``<run>/checkpoints/step-N``: built as the
    run built it (``<run>/train_config.yaml``: base, ``init_from``, stage), with the step's trainable
    tensors copied in; what a run's ``final`` would hold had it stopped at that step."""
    from train.build import build_model, load_tokenizer
    from train.checkpoints import load_trainable
    from train.config import load_config

    run_config = folder.parent.parent / "train_config.yaml"
    if not run_config.is_file():
        raise FileNotFoundError(
            f"{folder} is a training checkpoint, but its run's {run_config} is missing: "
            "the model cannot be rebuilt without it"
        )
    cfg = load_config(run_config)
    model = build_model(cfg)
    load_trainable(model, folder)
    return model, load_tokenizer(cfg.model.tokenizer, model)


def export_model(model: EarthGPT, state: Mapping[str, torch.Tensor]) -> EarthGPT:
    """What ``save_pretrained`` writes ``model``'s delta from, with the whole tensors of ``state``
    (:func:`train.checkpoints.gathered_state`) whatever ``model``'s own parameters are (shards under
    FSDP, empty under ZeRO-3): ``model``'s architecture at its stage on the meta device (nothing
    allocated) with the delta's tensors assigned, and ``model``'s base identity."""
    from earthgpt.model.checkpoint import delta_state, model_base_identity
    from earthgpt.model.earthgpt import EarthGPT
    from earthgpt.model.tuning import apply_stage

    copy = EarthGPT.from_config(model.config, pretrained=False, empty=True, dtype=model.dtype)
    apply_stage(copy, model.stage)
    names = list(delta_state(copy))
    missing = [name for name in names if name not in state]
    if missing:
        raise ValueError(f"the gathered state lacks {missing[0]} and {len(missing) - 1} more delta tensors")
    copy.load_state_dict({name: state[name] for name in names}, strict=False, assign=True)
    copy.pretrained_base, copy.seed = model.pretrained_base, model.seed
    copy.base_identity = model_base_identity(model)
    return copy


def export_final(run: Run) -> Path | None:
    """Write ``<output_dir>/final``: a delta checkpoint for ``load_pretrained`` plus the tokenizer
    (every process takes part: the tensors are gathered first)."""
    from earthgpt.model.checkpoint import save_pretrained
    from train.checkpoints import TEMP_PREFIX, gathered_state

    acc = run.accelerator
    acc.wait_for_everyone()
    state = gathered_state(run)
    final = run.output / "final"
    if acc.is_main_process:
        temp = run.output / f"{TEMP_PREFIX}final"
        shutil.rmtree(temp, ignore_errors=True)
        save_pretrained(export_model(run.model, state), temp, delta=True)
        run.processor.tokenizer.save_pretrained(str(temp / "tokenizer"))
        shutil.rmtree(final, ignore_errors=True)
        temp.rename(final)
    acc.wait_for_everyone()
    return final


if __name__ == "__main__":
    raise SystemExit(main())
