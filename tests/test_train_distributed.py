"""Two CPU processes (gloo, launched with torchrun): after two steps on different data both ranks
hold identical parameters, and those differ from the start (so the gradients were averaged)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from train_helpers import (
    CONFIGS,
    GLOO_ABORT,
    generated_records,
    overrides,
    run_ranks,
    torchrun_ranks,
    write_records,
)

HERE = Path(__file__).resolve().parent


def test_two_process_cpu_run_keeps_ranks_identical(tmp_path):
    records = write_records(tmp_path, generated_records(tmp_path, 8))
    out = tmp_path / "ranks"
    out.mkdir()
    args = overrides(
        records, {"images": tmp_path / "images"}, tmp_path / "run", "optim.batch_size=2", "run.progress=false"
    )
    worker = [str(HERE / "train_dist_worker.py"), str(CONFIGS / "tiny_stage1.yaml"), str(out), *args]
    done = torchrun_ranks(worker, fresh=[out, tmp_path / "run"])
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["start"] == ranks[1]["start"] != ranks[0]["sha256"]
    assert ranks[0]["sha256"] == ranks[1]["sha256"]
    assert len(ranks[0]["images"]) == len(ranks[1]["images"]) == 4
    for step in (0, 2):  # each global batch is split: the ranks see different examples
        assert ranks[0]["images"][step : step + 2] != ranks[1]["images"][step : step + 2]


def test_a_gloo_abort_launches_once_more_from_empty_folders(tmp_path):
    """``run_ranks``: a first launch that died of gloo's abort is run again from emptied output
    folders, with a warning holding its stderr; a second abort is returned as it is."""
    out, calls, script = tmp_path / "out", tmp_path / "calls", tmp_path / "rank.py"
    out.mkdir()
    script.write_text(  # each launch appends its port to CALLS; the first leaves a file in OUT and aborts
        "import sys\nfrom pathlib import Path\n"
        "calls, out, port = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]\n"
        "first = not calls.exists()\n"
        "calls.write_text(('' if first else calls.read_text()) + port + '\\n')\n"
        "assert not any(out.iterdir()), 'a launch found the output of the one before'\n"
        "if first:\n"
        "    (out / 'partial').touch()\n"
        f"    sys.exit({GLOO_ABORT!r})\n"
    )
    command = lambda port: [sys.executable, str(script), str(calls), str(out), str(port)]  # noqa: E731
    with pytest.warns(UserWarning, match="launched once more") as caught:
        done = run_ranks(command, {}, fresh=[out])
    assert done.returncode == 0, done.stderr
    assert len(calls.read_text().split()) == 2 and GLOO_ABORT in str(caught[0].message)

    failing = lambda port: [sys.executable, "-c", f"import sys; sys.exit({GLOO_ABORT!r})"]  # noqa: E731
    with pytest.warns(UserWarning, match="launched once more"):
        done = run_ranks(failing, {}, fresh=[out])
    assert done.returncode == 1 and GLOO_ABORT in done.stderr
