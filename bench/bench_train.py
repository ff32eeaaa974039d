"""Training throughput on this machine: the nano preset (random weights at the real sizes, no download)
in stage 1 and stage 2, each without (the baseline "uncached") and with cached vision features.

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
from train.run import setup
from train.steps import train_step

BASELINE = "uncached"


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


def markdown(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table, speed-up against the "uncached" row of the same stage."""
    base = {r["stage"]: r["tokens_per_s"] for r in rows if r["variant"] == BASELINE}
    lines = ["| stage | variant | tokens/s | samples/s | s/step | vs uncached |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['stage']} | {r['variant']} | {r['tokens_per_s']:.0f} | {r['samples_per_s']:.2f} | "
            f"{r['s_per_step']:.2f} | {r['tokens_per_s'] / base[r['stage']]:.2f}× |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the four measurements, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8, help="8, as in the nano CPU recipe")
    parser.add_argument("--mixed-precision", default="bf16", choices=["no", "bf16", "fp16"],
                        help="bf16, as in the nano CPU recipe (AMX on recent Xeons)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/train_cpu.json"))
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        records = synthetic_records(root / "data", 4 * args.batch_size)
        stage1_final = None
        for stage in (1, 2):
            for variant in (BASELINE, "cached"):
                extra: dict[str, Any] = {
                    "optim__batch_size": args.batch_size, "run__mixed_precision": args.mixed_precision,
                }
                if variant == "cached":
                    extra["data__feature_cache"] = str(root / "cache")
                if stage == 1:
                    extra.update(data__tasks=["caption"], data__one_pair_per_example=True)
                else:
                    extra["model__init_from"] = str(stage1_final)
                config = run_config(args.preset, stage, records, root / f"s{stage}-{variant}", **extra)
                row, run = measure(config, args.steps, args.warmup)
                if stage == 1 and variant == BASELINE:
                    stage1_final = export_final(run)
                rows.append({"stage": stage, "variant": variant, **row})
                print(f"stage {stage} {variant}: {row['tokens_per_s']:.0f} tokens/s", flush=True)
    table = markdown(rows)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "preset": args.preset,
        "steps": args.steps,
        "warmup": args.warmup,
        "batch_size": args.batch_size,
        "mixed_precision": args.mixed_precision,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "baseline": BASELINE,
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
