"""Training throughput on this machine: the nano preset (random weights at the real sizes, no download)
in stage 1 and stage 2, against the CPU's own measured bf16 matmul peak.

Variants: stage 1 without (the baseline "uncached") and with cached vision features; stage 2 with
each turn its own example and no cache (the baseline "unpacked, uncached": every turn re-encodes its
image and repeats the visual tokens), with the turns of a record packed into one sequence, and
packed with cached features (the recipe). Stage 2 is compared in answered turns per second, since
packing changes how many tokens a turn costs; every row also gives its model FLOP/s (train/flops.py)
as a fraction of the peak that a large bf16 (or fp32) matmul reaches on all threads in the same run.

    python bench/bench_train.py [--steps 3] [--warmup 1] [--batch-size 8] [--mixed-precision bf16]
        [--out bench/results/train_cpu.json]

Synthetic MMRS records over generated 224×224 images (caption + classification turns) are written to
a temporary folder; tokens are counted without padding, visual tokens included. The feature cache is
filled before timing (its one-off cost is reported apart). Prints a Markdown table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from train.config import config_from_dict
from train.export_weights import export_final
from train.run import mixed_precision_for, setup
from train.steps import train_step

BASELINE = "uncached"
STAGE2_BASELINE = "unpacked, uncached"
TURNS_PER_RECORD = 2  # synthetic records: a caption turn and a classification turn


def matmul_peak_tflops(dtype: torch.dtype, size: int = 4096, repeats: int = 5) -> float:
    """Median TFLOP/s of a ``size``² matmul in ``dtype`` on all threads: the practical compute peak."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - began)
    times.sort()
    return 2 * size**3 / times[len(times) // 2] / 1e12


def synthetic_records(folder: Path, count: int, size: int = 224, answer_chars: int = 120) -> Path:
    """``count`` records over generated images; returns the ``train.jsonl`` path."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    words = ["field", "river", "road", "harbour", "forest", "airport", "roof", "ship"]
    lines = []
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
            folder / "images" / f"{i}.png"
        )
        caption = " ".join(rng.choice(words, answer_chars // 6))[:answer_chars] + "."
        turns = [
            (
                "<image>\nPlease provide a one-sentence caption for the provided remote sensing image "
                "in detail.",
                caption,
                "caption",
            ),
            ("What is the category of this remote sensing image?", str(rng.choice(words)), "classification"),
        ]
        conv = [
            m
            for h, a, t in turns
            for m in ({"from": "human", "value": h, "task": t}, {"from": "assistant", "value": a, "task": t})
        ]
        lines.append(
            json.dumps(
                {
                    "id": f"bench/{i}",
                    "image_root": "images",
                    "image": f"{i}.png",
                    "width": size,
                    "height": size,
                    "sensor": "optical",
                    "split": "train",
                    "conversations": conv,
                }
            )
        )
    path = folder / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_config(preset: str, stage: int, records: Path, output: Path, **extra: Any) -> dict[str, Any]:
    """A training config as a dict for ``config_from_dict`` (random weights, byte-level tokenizer)."""
    sections: dict[str, Any] = {
        "stage": stage,
        "model": {
            "preset": preset,
            "pretrained": False,
            "tokenizer": "byte-level",
            "config": {"image_token_id": 259},
        },
        "data": {
            "sources": [f"mmrs={records}"],
            "image_roots": {"images": str(records.parent / "images")},
            "max_length": 512,
        },
        "optim": {"max_steps": 10_000, "batch_size": 2, "warmup_steps": 1},
        "run": {
            "output_dir": str(output),
            "tensorboard": False,
            "progress": False,
            "resume": "never",
            "save_every": 10_000,
            "log_every": 10_000,
        },
    }
    for dotted, value in extra.items():
        section, key = dotted.split("__")
        sections.setdefault(section, {})[key] = value
    return sections


def measure(config: dict[str, Any], steps: int, warmup: int) -> tuple[dict[str, float], Any]:
    """Set up a run, take ``warmup`` untimed steps, then time ``steps`` steps; returns rates and the run."""
    started = time.perf_counter()
    run = setup(config_from_dict(config))
    setup_s = time.perf_counter() - started
    for _ in range(warmup):
        train_step(run)
    run.throughput.read()
    began = time.perf_counter()
    for _ in range(steps):
        train_step(run)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - began
    rates = run.throughput.read()
    row = {
        "tokens_per_s": rates["tokens_per_s"],
        "samples_per_s": rates["samples_per_s"],
        "s_per_step": elapsed / steps,
        "setup_s": setup_s,
        "model_tflops_per_s": rates["model_tflops_per_s"],
    }
    if run.throughput.peak_tflops:
        row["mfu"] = rates["model_tflops_per_s"] / (
            run.throughput.peak_tflops * run.accelerator.num_processes
        )
    return row, run


def markdown(rows: list[dict[str, Any]], peak: float) -> str:
    """The results as a Markdown table: speed-up in turns/s against the baseline row of the same stage."""
    base = {r["stage"]: r["turns_per_s"] for r in rows if r["variant"] in (BASELINE, STAGE2_BASELINE)}
    lines = [
        "| stage | variant | tokens/s | turns/s | s/step | model TFLOP/s | of peak | vs baseline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['stage']} | {r['variant']} | {r['tokens_per_s']:.0f} | {r['turns_per_s']:.2f} | "
            f"{r['s_per_step']:.2f} | {r['model_tflops_per_s']:.3f} | "
            f"{r['model_tflops_per_s'] / peak:.1%} | {r['turns_per_s'] / base[r['stage']]:.2f}× |"
        )
    return "\n".join(lines)


def variant_settings(stage: int, variant: str, cache: Path) -> dict[str, Any]:
    """Config overrides of one variant (see the module docstring)."""
    extra: dict[str, Any] = {}
    if "uncached" not in variant:
        extra["data__feature_cache"] = str(cache)
    if stage == 1:
        extra.update(data__tasks=["caption"], data__one_pair_per_example=True)
    elif variant.startswith("unpacked"):
        extra["data__one_pair_per_example"] = True
    return extra


def main(argv: list[str] | None = None) -> int:
    """Run the four measurements, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8, help="8, as in the nano CPU recipe")
    parser.add_argument("--mixed-precision", default="bf16", choices=["no", "bf16", "fp16"],
                        help="bf16, as in the nano CPU recipe (AMX on recent Xeons; a CPU without native "
                        "bf16 trains in float32)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/train_cpu.json"))
    args = parser.parse_args(argv)
    precision = mixed_precision_for(args.mixed_precision)  # bf16 trains in float32 on an AVX2-only CPU
    peak_dtype = torch.float32 if precision == "no" else torch.bfloat16
    peak = matmul_peak_tflops(peak_dtype)
    print(f"{peak_dtype} matmul peak: {peak:.2f} TFLOP/s", flush=True)
    rows = []
    plan = [
        (1, BASELINE), (1, "cached"), (2, STAGE2_BASELINE), (2, "packed, uncached"), (2, "packed, cached"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        records = synthetic_records(root / "data", 4 * args.batch_size)
        stage1_final = None
        for stage, variant in plan:
            extra = variant_settings(stage, variant, root / "cache")
            extra.update(optim__batch_size=args.batch_size, run__mixed_precision=args.mixed_precision)
            if stage == 2:
                extra["model__init_from"] = str(stage1_final)
            config = run_config(args.preset, stage, records, root / f"s{stage}-{len(rows)}", **extra)
            row, run = measure(config, args.steps, args.warmup)
            if stage1_final is None:
                stage1_final = export_final(run)
            packed = stage == 2 and variant.startswith("packed")
            row["turns_per_s"] = row["samples_per_s"] * (TURNS_PER_RECORD if packed else 1)
            rows.append({"stage": stage, "variant": variant, **row})
            print(f"stage {stage} {variant}: {row['tokens_per_s']:.0f} tokens/s", flush=True)
    table = markdown(rows, peak)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "preset": args.preset,
        "steps": args.steps,
        "warmup": args.warmup,
        "batch_size": args.batch_size,
        "mixed_precision": precision,
        "mixed_precision_asked": args.mixed_precision,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "baseline": {"1": BASELINE, "2": STAGE2_BASELINE},
        "matmul_peak_tflops": peak,
        "matmul_peak_dtype": str(peak_dtype),
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
