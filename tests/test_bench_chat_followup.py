"""The chat follow-up benchmark (bench/bench_chat_followup.py) on the tiny random model: each timed
follow-up and its full recompute answer the same conversation, the follow-up feeding only the new
turn. Speed is not asserted here: the script reports it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
from test_processor import tiny_processor

from earthgpt.model.earthgpt import EarthGPT

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_chat_followup",
                                              ROOT / "bench" / "bench_chat_followup.py")
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_chat_followup"] = bench
spec.loader.exec_module(bench)


def test_each_turn_times_the_same_conversation_both_ways():
    processor = tiny_processor()
    model = EarthGPT.from_config(processor.config, pretrained=False, seed=3)
    image = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    run = bench.measure(model, processor, image, answer_tokens=4, device="cpu")
    assert set(run) == {"1", "2", "5", "10"}
    for turn in bench.TURNS:
        row = run[str(turn)]
        assert row["cached_fed"] + row["cached_reused"] == row["full_fed"], f"turn {turn}"
        assert row["cached_fed"] > 0 and row["cached_reused"] > processor.config.num_visual_tokens
    assert run["2"]["full_fed"] < run["5"]["full_fed"] < run["10"]["full_fed"]  # the history grows
    assert run["10"]["cached_reused"] > 5 * run["10"]["cached_fed"]  # and comes from the cache
    summary = {"model": "tiny", "device": "cpu", "repeats": 1, "answer_tokens": 4,
               "turns": bench.summarise([run])}
    assert summary["turns"]["10"]["speedup"] > 0
    table = bench.markdown(summary)
    assert table.count("\n| ") == 5 and "| 10 | " in table  # header and turns 1, 2, 5, 10
