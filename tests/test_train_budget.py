"""train/budget.py: steps that fit a time budget, from a probe run's logged speed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from train.budget import main, probe_rate, steps_within


def probe(folder: Path, rates: list[float], batch: int = 4, accum: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"step": i + 1, "loss": 1.0, "samples_per_s": r} for i, r in enumerate(rates)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "train_config.yaml").write_text(
        yaml.safe_dump({"optim": {"batch_size": batch, "grad_accum": accum}})
    )
    return folder


def test_the_first_window_is_left_out_and_the_median_taken(tmp_path):
    run = probe(tmp_path / "p", [1.0, 16.0, 15.0, 17.0, 400.0])
    assert probe_rate(run) == 16.5  # median of 16, 15, 17, 400
    # 60 s at 16.5 examples/s, 8 examples a step: 123.75 steps
    assert steps_within(run, 60) == 123
    assert steps_within(run, 60, processes=2) == 61
    assert steps_within(run, 60, maximum=100) == 100
    assert steps_within(run, 0.1, minimum=10) == 10


def test_a_single_window_is_used(tmp_path):
    assert probe_rate(probe(tmp_path / "p", [3.0])) == 3.0


@pytest.mark.parametrize("broken", ["no metrics", "no config", "no rates"])
def test_a_broken_probe_is_a_clear_error(tmp_path, broken, capsys):
    run = probe(tmp_path / "p", [2.0, 2.0])
    if broken == "no metrics":
        (run / "metrics.jsonl").unlink()
    elif broken == "no config":
        (run / "train_config.yaml").unlink()
    else:
        (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    assert main([str(run), "--seconds", "10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_the_command_prints_the_step_count(tmp_path, capsys):
    run = probe(tmp_path / "p", [0.0, 8.0, 8.0], batch=8, accum=1)  # a zero rate is not logged speed
    assert main([str(run), "--seconds", "30", "--min-steps", "5"]) == 0
    assert capsys.readouterr().out.strip() == "30"
    with pytest.raises(ValueError, match="positive"):
        steps_within(run, 0)
