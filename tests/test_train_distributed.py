"""Two CPU processes (gloo, launched with torchrun): after two steps on different data both ranks
hold identical parameters, and those differ from the start (so the gradients were averaged)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from train_helpers import CONFIGS, generated_records, overrides, write_records

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_cpu_run_keeps_ranks_identical(tmp_path):
    records = write_records(tmp_path, generated_records(tmp_path, 8))
    out = tmp_path / "ranks"
    out.mkdir()
    args = overrides(
        records, {"images": tmp_path / "images"}, tmp_path / "run", "optim.batch_size=2", "run.progress=false"
    )
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)]),
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
    }
    done = subprocess.run(
        [*torchrun, str(HERE / "train_dist_worker.py"), str(CONFIGS / "tiny_stage1.yaml"), str(out), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["start"] == ranks[1]["start"] != ranks[0]["sha256"]
    assert ranks[0]["sha256"] == ranks[1]["sha256"]
    assert len(ranks[0]["images"]) == len(ranks[1]["images"]) == 4
    for step in (0, 2):  # each global batch is split: the ranks see different examples
        assert ranks[0]["images"][step : step + 2] != ranks[1]["images"][step : step + 2]
