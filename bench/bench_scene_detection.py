"""Whole-scene detection: windows per second and seconds per megapixel, batched vs one window at a time.

Each size is a synthetic 3-band uint8 GeoTIFF (a gradient with bright rectangles, written in a
temporary folder) run through ``earthgpt detect``'s own path (:func:`earthgpt.commands.detect.detect_file`:
window reads, answers, merge, GeoPackage) after the model is loaded. The baseline is
``--batch-size 1``: every window asked in its own :class:`~earthgpt.inference.ChatSession`, today's
code path before batching. The batched runs answer ``--batch-size`` windows in one token loop
(:mod:`earthgpt.batch_generate`). Both use the same prompt, the default stop rule and the same
``--max-new-tokens`` cap, so when their answers are equal (the JSON says so, window by window)
they did the same work. Each time is the median of ``--repeats`` runs; the modes alternate within
a run so that other load on the machine falls on both.

Runs on the ``nano`` model when its base is prepared (``earthgpt weights prepare``), else on the
``tiny`` random preset with the bundled SmolLM2 tokenizer, and says which.

    python bench/bench_scene_detection.py results.json [--sizes 2048,4096,8192] [--repeats 5]
        [--batch-sizes 8] [--max-new-tokens 32] [--threads 1]

Time is wall-clock; the JSON also has the CPU seconds of the process, the steadier number on a
machine shared with other jobs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from earthgpt.commands import detect
from earthgpt.inference import ChatSession
from earthgpt.scene_detection import DEFAULT_BATCH_SIZE


def load(device: str) -> tuple[Any, Any, str]:
    """The nano model when its base is prepared, else the tiny preset; returns (model, processor, why)."""
    from earthgpt.model.base_cache import read_manifest

    try:
        read_manifest()
    except FileNotFoundError:
        from bench_chat_followup import load as load_tiny  # bench/ is the script's folder

        return load_tiny(device)
    from earthgpt.inference import is_untrained_start, load_model

    model, processor = load_model("nano", device=device)
    weights = "its untrained start (timing only)" if is_untrained_start("nano") else "the shipped weights"
    return model, processor, f"nano, {weights}"


def write_scene(path: Path, size: int) -> None:
    """A ``size`` × ``size`` 3-band uint8 GeoTIFF (UTM, 0.5 m pixels): a gradient with bright
    rectangles, written 512 rows at a time."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(size)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": from_origin(500_000, 4_000_000, 0.5, 0.5),
               "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate"}
    cols = np.arange(size, dtype=np.float32)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, 512):
            rows = min(512, size - row)
            ramp = ((cols[None, :] + np.arange(row, row + rows)[:, None]) % 256 * 0.4 + 40).astype(np.uint8)
            block = np.repeat(ramp[None], 3, axis=0)
            for _ in range(size // 64):
                x, y = int(rng.integers(0, size - 40)), int(rng.integers(0, rows))
                block[:, y : y + int(rng.integers(8, 30)), x : x + int(rng.integers(8, 40))] = rng.integers(
                    150, 256, (3, 1, 1))
            dst.write(block, window=Window(0, row, size, rows))


def run_once(path: Path, out: Path, batch: int, max_new_tokens: int,
             new_chat: Callable[[Any], Any]) -> tuple[float, float, Any]:
    """One ``earthgpt detect`` of ``path`` after the model is loaded: (seconds, CPU seconds of this
    process, SceneResult)."""
    parser = argparse.ArgumentParser()
    detect.add_arguments(parser)
    args = parser.parse_args([str(path), "--out", str(out), "--batch-size", str(batch),
                              "--max-new-tokens", str(max_new_tokens)])
    start, cpu = time.perf_counter(), time.process_time()
    result, _ = detect.detect_file(args, new_chat, "bench")
    return time.perf_counter() - start, time.process_time() - cpu, result


Runs = list[tuple[float, float]]
"""(wall seconds, CPU seconds) of each run of one mode."""


def measure_size(size: int, folder: Path, modes: Sequence[int], repeats: int, max_new_tokens: int,
                 new_chat: Callable[[Any], Any]) -> dict[str, Any]:
    """Every mode (batch size; 1 is the baseline) ``repeats`` times on one synthetic scene."""
    path = folder / f"scene_{size}.tif"
    write_scene(path, size)
    runs: dict[int, Runs] = {batch: [] for batch in modes}
    answers: dict[int, list[str]] = {}
    windows = 0
    for _ in range(repeats):
        for batch in modes:
            took, cpu, result = run_once(path, folder / f"out_{size}_{batch}.gpkg", batch, max_new_tokens,
                                         new_chat)
            runs[batch].append((took, cpu))
            answers.setdefault(batch, [str(text) for _, text in result.answers])
            windows = result.tiles
            if batch == 1:
                base = result
    megapixels = size * size / 1e6
    rows = {str(batch): _row(runs[batch], runs[1], windows, megapixels, answers[batch], answers[1])
            for batch in modes}
    return {"size": size, "megapixels": megapixels, "windows": windows,
            "windows_per_megapixel": windows / megapixels, "modes": rows,
            "answers_at_limit": base.answers_at_limit, "answers_stopped": base.answers_stopped,
            "mean_answer_chars": statistics.mean(len(a) for a in answers[1]) if answers[1] else 0.0}


def _row(runs: Runs, baseline: Runs, windows: int, megapixels: float, answers: list[str],
         baseline_answers: list[str]) -> dict[str, Any]:
    """One mode's medians (wall and CPU seconds of this process), rates and ratios to the baseline."""
    wall, cpu = (statistics.median(r[k] for r in runs) for k in (0, 1))
    base_wall, base_cpu = (statistics.median(r[k] for r in baseline) for k in (0, 1))
    return {
        "median_s": wall, "median_cpu_s": cpu,
        "runs_s": [r[0] for r in runs], "runs_cpu_s": [r[1] for r in runs],
        "windows_per_s": windows / wall, "s_per_megapixel": wall / megapixels,
        "speedup_vs_one_by_one": base_wall / wall, "cpu_speedup_vs_one_by_one": base_cpu / cpu,
        "answers_equal_to_one_by_one": answers == baseline_answers,
        "windows_with_different_answers": sum(a != b for a, b in zip(answers, baseline_answers, strict=True)),
    }


def markdown(summary: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    lines = [
        f"Model: {summary['model']}; device {summary['device']}; median of {summary['repeats']} runs; "
        f"--max-new-tokens {summary['max_new_tokens']}.",
        "",
        "| raster | windows | batch size | median s | windows/s | s/MP | vs one-by-one (wall, CPU) | "
        "answers equal |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for scene in summary["scenes"]:
        for batch, row in scene["modes"].items():
            name = "1 (baseline)" if batch == "1" else batch
            lines.append(
                f"| {scene['size']}² ({scene['megapixels']:.1f} MP) | {scene['windows']} | {name} | "
                f"{row['median_s']:.1f} | {row['windows_per_s']:.2f} | {row['s_per_megapixel']:.2f} | "
                f"{row['speedup_vs_one_by_one']:.2f}×, {row['cpu_speedup_vs_one_by_one']:.2f}× | "
                f"{'yes' if row['answers_equal_to_one_by_one'] else 'no'} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, write the JSON results (again after each size) and print the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write the JSON results")
    parser.add_argument("--sizes", default="2048,4096,8192", help="raster sides in pixels, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-sizes", default=str(DEFAULT_BATCH_SIZE),
                        help="batched modes to measure against batch size 1, comma-separated")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="answer length cap per window")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); 1 on a shared machine, where a "
                             "thread waiting for a descheduled sibling inflates small batches most")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = [1, *(int(b) for b in args.batch_sizes.split(",") if int(b) != 1)]
    model, processor, why = load(args.device)
    print(f"model: {why}", file=sys.stderr)

    def new_chat(sensor: Any) -> ChatSession:
        return ChatSession(model, processor, sensor=sensor.value)

    summary: dict[str, Any] = {
        "benchmark": "scene_detection", "model": why,
        "device": f"{args.device} ({platform.processor() or platform.machine()}, "
                  f"{torch.get_num_threads()} torch threads)",
        "torch": torch.__version__, "repeats": args.repeats, "max_new_tokens": args.max_new_tokens,
        "baseline": "batch size 1: one ChatSession per window (today's path)", "scenes": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_scene(folder / "warm.tif", 600)  # warm-up: 4 windows in each mode
        for batch in modes:
            run_once(folder / "warm.tif", folder / "warm.gpkg", batch, args.max_new_tokens, new_chat)
        for size in (int(s) for s in args.sizes.split(",")):
            scenes = summary["scenes"]
            scenes.append(measure_size(size, folder, modes, args.repeats, args.max_new_tokens, new_chat))
            per_mp = {str(b): [s["modes"][str(b)]["s_per_megapixel"] for s in scenes] for b in modes}
            summary["s_per_megapixel_spread"] = {b: max(v) / min(v) for b, v in per_mp.items()}
            args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
