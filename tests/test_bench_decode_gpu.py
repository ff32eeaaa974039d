"""The decode benchmark (bench/bench_decode_gpu.py) at tiny widths on the CPU: every variant decodes
the forced number of tokens, and the rows carry the bound they are compared with. Speed is not
asserted here: the script reports it (on a GPU, at the 7b preset's size)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_decode_gpu", ROOT / "bench" / "bench_decode_gpu.py")
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_decode_gpu"] = bench
spec.loader.exec_module(bench)


def test_every_variant_decodes_the_forced_tokens_and_is_set_against_the_bound(tmp_path: Path) -> None:
    model = bench.build("7b", shrink=True, device="cpu")
    prompt = torch.randint(0, 200, (1, 6), generator=torch.Generator().manual_seed(0))
    plain = bench.plain_generate(model.llm, prompt)(5)
    assert plain.shape == (1, 6 + 5)  # the prompt, then exactly 5 tokens (no early stop)
    assert len(bench.ours(model, prompt)(5)) == 5
    assert torch.equal(bench.plain_generate(model.llm, prompt, static=True)(5), plain)  # same greedy answer
    out = tmp_path / "decode.json"
    argv = ["--shrink", "--prompt", "6", "--new", "12", "--repeats", "1", "--out", str(out)]
    if torch.cuda.is_available():
        argv += ["--quantized"]
    assert bench.main(argv) == 0
    summary = json.loads(out.read_text())
    assert summary["copy_bandwidth_gb_s"] > 0
    rows = summary["rows"]
    assert [r["variant"] for r in rows] == ["generate (baseline)", "ours", "generate, static cache + compile"]
    for row in rows:
        assert "error" not in row, row
        assert row["bound_tokens_per_s"] > 0 and row["total_s"] > 0
        if row["tokens_per_s"] is not None:  # None when the CPU's noise hides 11 tokens' time
            assert row["of_bound"] == row["tokens_per_s"] / row["bound_tokens_per_s"]
        assert row["weight_gib"] * 2**30 == bench.weight_bytes(model.llm)
    table = bench.markdown(rows)
    assert table.count("\n") == 4 and "| ours |" in table
