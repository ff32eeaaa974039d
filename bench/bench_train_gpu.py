"""Stage-1 training throughput and MFU of a 7B-shaped EarthGPT with random weights (no download).

    python bench/bench_train_gpu.py                   # on a GPU: the 7b preset's sizes, bf16, SDPA,
                                                      # batch 4 × 2048 tokens, gradient checkpointing
    python bench/bench_train_gpu.py --shrink          # the same wiring at tiny widths (CPU check)
    python bench/bench_train_gpu.py --peak-tflops 989 # when the GPU is not in train/flops.py's table

Every example is truncated to exactly ``--seq-len`` tokens (long synthetic captions), so a step
sees ``batch × seq-len`` tokens. MFU follows the convention in ``train/flops.py``. Writes JSON,
prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from bench_train import measure, run_config, synthetic_records

from earthgpt.config import get_preset, shrink_for_test


def main(argv: list[str] | None = None) -> int:
    """Measure, print, write."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="7b")
    parser.add_argument("--shrink", action="store_true", help="tiny widths, same wiring (for a CPU check)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench/results/train_gpu.json"))
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    preset = get_preset(args.preset)
    overrides = {"image_token_id": 259}
    if args.shrink:
        small = shrink_for_test(preset).to_dict()
        overrides.update({k: small[k] for k in ("vit", "cnn", "llm", "image_size", "num_visual_tokens")})
    for part in ("vit", "cnn", "llm"):  # random weights at the preset's sizes: no source to load
        overrides.setdefault(part, {})["source"] = None
    with tempfile.TemporaryDirectory() as tmp:
        size = overrides.get("image_size", preset.image_size)
        records = synthetic_records(
            Path(tmp) / "data", 2 * args.batch_size, size=size, answer_chars=4 * args.seq_len
        )
        config = run_config(
            args.preset,
            1,
            records,
            Path(tmp) / "run",
            model__config=overrides,
            model__dtype="bfloat16" if cuda else "float32",
            model__attn_implementation="sdpa",
            data__max_length=args.seq_len,
            data__tasks=["caption"],
            data__one_pair_per_example=True,
            optim__batch_size=args.batch_size,
            run__mixed_precision="bf16" if cuda else "no",
            run__gradient_checkpointing=not args.no_checkpointing,
            run__peak_tflops=args.peak_tflops,
        )
        row, _ = measure(config, args.steps, args.warmup)
    row.update(
        device=torch.cuda.get_device_name() if cuda else "cpu",
        preset=args.preset,
        shrink=args.shrink,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        peak_memory_gib=torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    )
    mfu = f"{row['mfu']:.1%}" if "mfu" in row else "n/a (no peak known)"
    print("| device | preset | batch × seq | tokens/s | model TFLOP/s | MFU |\n|---|---|---|---|---|---|")
    print(
        f"| {row['device']} | {args.preset}{' (shrunk)' if args.shrink else ''} | "
        f"{args.batch_size} × {args.seq_len} | {row['tokens_per_s']:.0f} | "
        f"{row['model_tflops_per_s']:.2f} | {mfu} |"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
