"""Peak host memory (RSS) to build, save and reload a ~1B-parameter model, against its bf16 size.

A LLaMA-shaped LLM of about 1.1 B parameters (hidden 2048, 16 layers, GQA 32/8 heads, MLP 8192,
vocabulary 32,000, untied head) behind the tiny preset's vision encoders, random weights in bf16.
Each step runs in a fresh process and reports its peak RSS, the RSS above what the imports alone
take, and that increment as a multiple of the model's bf16 size (the target is ≤ 1.3×). Every
weight is read once after each step, so memory-mapped weights count as they would in use.

Steps: the baseline **build in float32, then cast** (how every random base was built before);
**build** (``EarthGPT.from_config`` in bf16); **save** (a full checkpoint, and the LLM as a
transformers folder); **reload** with ``load_pretrained`` (a full checkpoint: an empty build on
the meta device, then the file's tensors assigned in their dtype); **reload empty**
(``from_config(empty=True)`` on the meta device, then ``loaders.assign_weights``); **load LLM**
(``loaders.load_llm``: transformers' ``from_pretrained``, meta device, straight into bf16;
compared with the LLM's own bf16 size).

    python bench/bench_build_memory.py [--out bench/results/build_memory.json] [--hidden 2048]
        [--layers 16] [--workdir DIR]

Linux only (reads ``/proc/self/status``). Needs about 3 × the bf16 size in RAM and 2 × on disk.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BASELINE = "build, float32 then cast"
STEPS = {
    "build_fp32_cast": BASELINE,
    "build": "build in bf16 (from_config)",
    "save": "build + save (full checkpoint, LLM folder)",
    "reload_library": "reload: load_pretrained (full checkpoint)",
    "reload_empty": "reload: empty build + assign_weights",
    "load_llm": "load LLM: load_llm (from_pretrained)",
}


def model_config(hidden: int, layers: int) -> Any:
    """The tiny preset's vision with a LLaMA of ``hidden`` width and ``layers`` layers."""
    from earthgpt.config import get_preset

    config = get_preset("tiny")
    config.name = f"bench-{hidden}x{layers}"
    config.llm = dataclasses.replace(
        config.llm, hidden_size=hidden, num_layers=layers, num_heads=hidden // 64,
        num_kv_heads=max(1, hidden // 256), intermediate_size=4 * hidden, vocab_size=32000,
        max_position_embeddings=4096, tie_word_embeddings=False,
    )
    return config


def _rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _touch(module: Any) -> None:
    """Read every floating tensor once (memory-mapped weights come into RSS as in use)."""
    import torch

    for tensor in module.state_dict().values():
        if tensor.is_floating_point():
            torch.sum(tensor, dtype=torch.float32)


def _run_step(step: str, config: Any, folder: Path) -> Any:
    import torch

    from earthgpt.model.checkpoint import WEIGHTS_FILE, load_pretrained, save_pretrained
    from earthgpt.model.earthgpt import EarthGPT
    from earthgpt.model.loaders import assign_weights, load_llm

    bf16 = torch.bfloat16
    if step == "build_fp32_cast":
        return EarthGPT.from_config(config, pretrained=False, dtype=torch.float32).to(bf16)
    if step == "build":
        return EarthGPT.from_config(config, pretrained=False, dtype=bf16)
    if step == "save":
        from train.build import byte_level_tokenizer

        model = EarthGPT.from_config(config, pretrained=False, dtype=bf16)
        save_pretrained(model, folder / "full", delta=False)
        model.llm.save_pretrained(folder / "llm")
        byte_level_tokenizer().save_pretrained(folder / "llm")
        return model
    if step == "reload_library":
        return load_pretrained(folder / "full")
    if step == "reload_empty":
        model = EarthGPT.from_config(config, pretrained=False, dtype=bf16, empty=True)
        assign_weights(model, folder / "full" / WEIGHTS_FILE)
        return model
    return load_llm(str(folder / "llm"), dtype=bf16)[0]


def child(step: str, hidden: int, layers: int, folder: Path) -> dict[str, float]:
    """One step in this (fresh) process: its peak RSS and the RSS the imports alone took."""
    import torch  # noqa: F401  (imports first: they are not the model's memory)
    import transformers  # noqa: F401
    from transformers import ConvNextModel, Dinov2Model, LlamaForCausalLM  # noqa: F401

    import earthgpt.model.checkpoint  # noqa: F401
    import train.build  # noqa: F401

    imports = _rss_mb()
    start = time.perf_counter()
    model = _run_step(step, model_config(hidden, layers), folder)
    _touch(model)
    return {"imports_mb": imports, "peak_mb": _peak_mb(), "seconds": time.perf_counter() - start}


def bf16_sizes(config: Any) -> tuple[float, float]:
    """Size in MiB of the whole model and of its LLM, every tensor in bf16."""
    from earthgpt.model.earthgpt import EarthGPT

    model = EarthGPT.from_config(config, pretrained=False, empty=True)
    whole = sum(t.numel() for t in model.state_dict().values()) * 2 / 2**20
    return whole, sum(t.numel() for t in model.llm.state_dict().values()) * 2 / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/build_memory.json"))
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--workdir", type=Path, default=None, help="checkpoints go here (default: temp)")
    parser.add_argument("--child", choices=list(STEPS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.hidden, args.layers, args.workdir)))
        return 0
    whole, llm = bf16_sizes(model_config(args.hidden, args.layers))
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for step, label in STEPS.items():
            command = [sys.executable, __file__, "--child", step, "--hidden", str(args.hidden),
                       "--layers", str(args.layers), "--workdir", tmp]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"step {step} failed:\n{done.stderr[-2000:]}")
            found = json.loads(done.stdout.strip().splitlines()[-1])
            size = llm if step == "load_llm" else whole
            above = found["peak_mb"] - found["imports_mb"]
            rows.append({"step": step, "label": label, "bf16_mb": size, "above_imports_mb": above,
                         "ratio": above / size, **found})
    _report(args, rows, whole, llm)
    return 0


def _report(args: argparse.Namespace, rows: list[dict], whole: float, llm: float) -> None:
    import torch

    result = {
        "benchmark": "build_memory", "baseline": BASELINE, "hidden": args.hidden, "layers": args.layers,
        "bf16_mb": whole, "llm_bf16_mb": llm, "torch": torch.__version__,
        "machine": platform.platform(), "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"model {whole:,.0f} MiB in bf16 (LLM {llm:,.0f} MiB); peak RSS of each step in a fresh process\n")
    print("| step | peak RSS | above imports | × bf16 size | s |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['label']} | {row['peak_mb']:,.0f} MiB | {row['above_imports_mb']:,.0f} MiB | "
              f"{row['ratio']:.2f}× | {row['seconds']:.1f} |")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
