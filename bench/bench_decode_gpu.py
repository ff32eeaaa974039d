"""Batch-1 greedy decode of a 7B-shaped EarthGPT LLM (random weights, no download): our token loop
against plain ``transformers`` ``generate``, both against the memory-bandwidth bound, in bf16, 8-bit
and 4-bit (issue 13, row 6: decode and memory).

    python bench/bench_decode_gpu.py              # on a GPU: the 7b preset's LLM; bf16, then 8-bit
                                                  # and 4-bit NF4 (bitsandbytes) when it is installed
    python bench/bench_decode_gpu.py --shrink     # the same wiring at tiny widths (a CPU check)

Variants, each on the same weights and the same random prompt of ``--prompt`` tokens:

- ``generate`` (the baseline): ``model.llm.generate`` with its default dynamic cache, greedy,
  ``--new`` tokens forced (no end-of-sequence stop);
- ``ours``: ``earthgpt.inference.generate`` (what chat, eval and the app call), same tokens;
- ``generate, static cache + compile`` (unquantized weights; compiled on a GPU only): ``generate`` with
  ``cache_implementation="static"``, which transformers compiles by itself on a GPU
  (``torch.compile`` of the forward with its default ``CompileConfig``, CUDA graphs): the recipe it
  documents for fast decode, as the anchor our loop has to reach. A variant that fails is recorded
  with its error, not fatal.

Decode speed is ``(new - 1) / (t(new tokens) - t(1 token))``, medians over ``--repeats``, so the
prompt's prefill is left out. The **bound** is the measured device copy bandwidth (bytes read +
written per second, a 2 GiB tensor copied, as the H200 figure of about 4.3 TB/s counts them) over
the bytes of the LLM's weights: a batch-1 decode step has to read every weight once. ``peak GiB``
is ``torch.cuda.max_memory_allocated`` from loading that precision to the end of its runs.
Writes JSON (``--out``) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from earthgpt.config import get_preset, shrink_for_test
from earthgpt.inference import generate
from earthgpt.model.earthgpt import EarthGPT


def build(preset: str, shrink: bool, device: str) -> EarthGPT:
    """The preset's LLM at full size (tiny with ``shrink``), random, in bf16 on ``device``; the
    vision side at tiny widths (decode never runs it)."""
    config = get_preset(preset)
    small = shrink_for_test(config)
    if shrink:
        config = small
    else:
        config.vit, config.cnn = small.vit, small.cnn
        config.image_size, config.num_visual_tokens = small.image_size, small.num_visual_tokens
    for part in (config.vit, config.cnn, config.llm):
        part.source = None
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = EarthGPT.from_config(config, pretrained=False, dtype=dtype)
    return model.to(device)


def copy_bandwidth(device: str, gib: float) -> float:
    """Bytes read + written per second by a device-to-device copy of a ``gib`` GiB tensor (median of 5)."""
    source = torch.empty(int(gib * 2**30), dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    times = []
    for _ in range(6):
        _sync(device)
        start = time.perf_counter()
        target.copy_(source)
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * source.numel() / statistics.median(times[1:])


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer (4-bit weights count as their packed bytes)."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def decode_rate(run: Callable[[int], Any], new: int, repeats: int, device: str) -> dict[str, float]:
    """Tokens/s of ``run(n)`` (generates n tokens) past the first token: medians over ``repeats``."""

    def timed(n: int) -> float:
        _sync(device)
        start = time.perf_counter()
        run(n)
        _sync(device)
        return time.perf_counter() - start

    timed(1), timed(new)  # warm-up (and compilation for each cache length, for a compiled variant)
    one = statistics.median(timed(1) for _ in range(repeats))
    full = statistics.median(timed(new) for _ in range(repeats))
    rate = (new - 1) / (full - one) if full > one else None  # None: too few tokens to tell apart
    return {"first_token_s": one, "total_s": full, "tokens_per_s": rate}


def plain_generate(llm: Any, prompt: torch.Tensor, *, static: bool = False) -> Callable[[int], Any]:
    """``llm.generate`` forced to produce exactly n tokens, greedy."""

    def run(n: int) -> Any:
        extra = {"cache_implementation": "static"} if static else {}
        return llm.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
            **extra,
        )

    return run


def ours(model: EarthGPT, prompt: torch.Tensor) -> Callable[[int], Any]:
    """``earthgpt.inference.generate`` for exactly n tokens (no stop ids), greedy."""
    return lambda n: generate(model, prompt, max_new_tokens=n, stop_ids=())


def quantized_llm(folder: Path, bits: int, device: str) -> Any:
    """The LLM saved in ``folder`` reloaded through bitsandbytes (LLM.int8 or 4-bit NF4; bf16 compute)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if bits == 4:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
    else:
        quantization = BitsAndBytesConfig(load_in_8bit=True)
    return AutoModelForCausalLM.from_pretrained(
        folder, quantization_config=quantization, device_map=device, dtype=torch.bfloat16
    )


def measure(model: EarthGPT, args: argparse.Namespace, device: str, bandwidth: float) -> list[dict[str, Any]]:
    """Every precision and variant's row (see the module doc)."""
    generator = torch.Generator().manual_seed(0)
    vocab = model.llm.get_input_embeddings().num_embeddings
    prompt = torch.randint(0, min(vocab, 32_000), (1, args.prompt), generator=generator).to(device)
    rows: list[dict[str, Any]] = []
    precisions = ["bf16" if device == "cuda" else "float32", *args.quantized]
    bf16_llm = model.llm
    with tempfile.TemporaryDirectory() as folder:  # bf16 weights, written once for both quantized loads
        saved = Path(folder)
        for precision in precisions:
            if precision in ("8-bit", "4-bit"):
                if not any(saved.iterdir()):
                    bf16_llm.save_pretrained(saved)
                model.llm = bf16_llm.to("cpu")  # the device holds one copy of the LLM at a time
                gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            try:
                if precision in ("8-bit", "4-bit"):
                    model.llm = quantized_llm(saved, int(precision[0]), device)
            except Exception as error:  # bitsandbytes missing or not supported here
                rows.append(
                    {"precision": precision, "variant": "load", "error": f"{type(error).__name__}: {error}"}
                )
                continue
            size = weight_bytes(model.llm)
            bound = bandwidth / size
            variants: list[tuple[str, Callable[[int], Any]]] = [
                ("generate (baseline)", plain_generate(model.llm, prompt)),
                ("ours", ours(model, prompt)),
            ]
            if precision in ("bf16", "float32") and not args.no_compile:
                variants.append(
                    ("generate, static cache + compile", plain_generate(model.llm, prompt, static=True))
                )
            for name, run in variants:
                row: dict[str, Any] = {
                    "precision": precision,
                    "variant": name,
                    "weight_gib": size / 2**30,
                    "bound_tokens_per_s": bound,
                }
                try:
                    row.update(decode_rate(run, args.new, args.repeats, device))
                    row["of_bound"] = row["tokens_per_s"] / bound if row["tokens_per_s"] else None
                except Exception as error:
                    row["error"] = f"{type(error).__name__}: {error}"
                rows.append(row)
            if device == "cuda":
                peak = torch.cuda.max_memory_allocated() / 2**30
                for row in rows:
                    if row["precision"] == precision:
                        row["peak_gib"] = peak
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table BENCHMARKS.md holds."""
    lines = [
        "| precision | variant | weights GiB | peak GiB | tokens/s | bound | of bound | vs generate |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = {r["precision"]: r.get("tokens_per_s") for r in rows if r["variant"] == "generate (baseline)"}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['precision']} | {r['variant']} | {r['error'][:80]} | | | | | |")
            continue
        rate, baseline = r["tokens_per_s"], base.get(r["precision"])
        peak = f"{r['peak_gib']:.1f}" if "peak_gib" in r else "–"
        speed = f"{rate:.1f} | {r['bound_tokens_per_s']:.0f} | {r['of_bound']:.0%}" if rate else "– | | "
        ratio = f"{rate / baseline:.2f}×" if rate and baseline else "–"
        name = f"{r['precision']} | {r['variant']}"
        lines.append(f"| {name} | {r['weight_gib']:.2f} | {peak} | {speed} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure, print, write."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="7b")
    parser.add_argument("--shrink", action="store_true", help="tiny widths, same wiring (for a CPU check)")
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens")
    parser.add_argument("--new", type=int, default=64, help="new tokens per timed answer")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--quantized",
        nargs="*",
        default=["8-bit", "4-bit"],
        choices=["8-bit", "4-bit"],
        help="bitsandbytes precisions after bf16 (GPU only)",
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the static cache + compile variant")
    parser.add_argument("--out", type=Path, default=Path("bench/results/decode_gpu.json"))
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        args.quantized = []  # bitsandbytes 8/4-bit is measured on the GPU only
    model = build(args.preset, args.shrink, device)
    bandwidth = copy_bandwidth(device, 2.0 if device == "cuda" else 0.25)
    rows = measure(model, args, device, bandwidth)
    summary = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "preset": args.preset,
        "shrink": args.shrink,
        "prompt": args.prompt,
        "new": args.new,
        "repeats": args.repeats,
        "copy_bandwidth_gb_s": bandwidth / 1e9,
        "torch": torch.__version__,
        "rows": rows,
    }
    print(markdown(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
