"""How many optimizer steps fit a time budget, from a short probe run on the same machine.

``python -m train.budget RUN_DIR --seconds S`` reads a probe run's ``metrics.jsonl`` (its logged
``samples_per_s``, summed over processes) and ``train_config.yaml`` (examples per optimizer step:
``batch_size · grad_accum`` times the processes) and prints the number of steps that take about
``S`` seconds at the probe's median speed. The first logged window is left out: it holds the
start-up (CUDA context, kernel selection, the first batches' allocations). A probe run uses the
real run's config with ``run.stop_at`` set, so it measures the real shapes, data and precision; its
vision-feature cache is the real run's too, so the probe also pays the cache's one-time build.

``scripts/train_nano_gpu.sh`` sizes each stage this way, so the recipe fits its minutes of GPU time
on whatever GPU runs it instead of assuming a speed nobody measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml


def probe_rate(run_dir: Path) -> float:
    """Median examples per second over the probe's logged windows, the first one left out when
    there are others."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(
            f"{path} is missing: the probe run did not log (set run.log_every below run.stop_at)"
        )
    rates = [
        float(row["samples_per_s"])
        for row in map(json.loads, path.read_text().splitlines())
        if row.get("samples_per_s")
    ]
    if not rates:
        raise ValueError(f"{path} logs no samples_per_s")
    return statistics.median(rates[1:] or rates)


def examples_per_step(run_dir: Path, processes: int = 1) -> int:
    """Examples one optimizer step sees, from the run's saved config."""
    path = run_dir / "train_config.yaml"
    if not path.is_file():
        raise ValueError(f"{path} is missing: not a training run folder")
    optim = (yaml.safe_load(path.read_text()) or {}).get("optim", {})
    return int(optim.get("batch_size", 1)) * int(optim.get("grad_accum", 1)) * processes


def steps_within(
    run_dir: Path, seconds: float, *, processes: int = 1, minimum: int = 1, maximum: int | None = None
) -> int:
    """Optimizer steps that take about ``seconds`` at the probe's speed, clamped to
    ``[minimum, maximum]``."""
    if seconds <= 0:
        raise ValueError(f"the time budget must be positive, got {seconds} s")
    steps = int(seconds * probe_rate(run_dir) / examples_per_step(run_dir, processes))
    steps = max(minimum, steps)
    return min(steps, maximum) if maximum is not None else steps


def main(argv: Sequence[str] | None = None) -> int:
    """Print the step count for a budget; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m train.budget",
        description="Steps that fit a time budget, from a probe run's logged speed.",
    )
    parser.add_argument("run_dir", type=Path, help="the probe run's output folder")
    parser.add_argument("--seconds", type=float, required=True, help="training time to fill")
    parser.add_argument("--processes", type=int, default=1, help="processes of the real run")
    parser.add_argument("--min-steps", type=int, default=1)
    parser.add_argument("--max-steps", type=int, help="never more than this")
    args = parser.parse_args(argv)
    try:
        steps = steps_within(
            args.run_dir,
            args.seconds,
            processes=args.processes,
            minimum=args.min_steps,
            maximum=args.max_steps,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
