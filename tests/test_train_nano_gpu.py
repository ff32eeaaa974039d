"""scripts/train_nano_gpu.sh end to end at tiny size on the CPU (TINY=1): the GPU recipe's configs,
its speed probes and budgets, both stages, the export and the val evaluation, on a small MMRS set
cut from the real data; and its refusal to run the real recipe without a GPU."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from earthgpt.model.checkpoint import load_pretrained
from train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_nano_gpu.sh"


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1", **extra}


@pytest.fixture(scope="module")
def small_mmrs(tmp_path_factory, shared_mmrs) -> Path:
    """Two train records and one val record of every dataset of the real MMRS build."""
    full = shared_mmrs
    small = tmp_path_factory.mktemp("mmrs_small")
    for split, per_dataset in (("train", 2), ("val", 1)):
        seen: collections.Counter[str] = collections.Counter()
        lines = []
        for line in (full / f"{split}.jsonl").read_text().splitlines():
            dataset = json.loads(line)["dataset"]
            if seen[dataset] < per_dataset:
                seen[dataset] += 1
                lines.append(line)
        (small / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    (small / "card.json").write_text((full / "card.json").read_text())
    return small


def test_the_gpu_configs_load():
    for stage in (1, 2):
        config = load_config(str(ROOT / "train" / "configs" / f"nano_gpu_stage{stage}.yaml"), [])
        assert config.stage == stage
        assert config.model.preset == "nano" and config.model.config["num_visual_tokens"] == 256
        assert config.run.mixed_precision == "bf16"
    stage2 = load_config(str(ROOT / "train" / "configs" / "nano_gpu_stage2.yaml"), [])
    assert stage2.model.config["projector"] == {"position": "fourier2d"} and stage2.optim.position_lr > 0


def test_the_script_runs_end_to_end_at_tiny_size(small_mmrs, shared_data, tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        ["bash", str(SCRIPT), str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env=env(TINY="1", MMRS=str(small_mmrs), EARTHGPT_DATA=str(shared_data), EVAL_LIMIT="1"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    phases = {}
    for row in (out / "timing.tsv").read_text().splitlines()[1:]:
        phase, seconds, steps = row.split("\t")
        phases[phase] = (float(seconds), steps)
    assert list(phases) == ["mmrs", "probe1", "stage1", "probe2", "stage2", "export", "eval"]
    for stage in (1, 2):
        steps = int(phases[f"stage{stage}"][1])
        assert steps >= 10  # the script's floor
        metrics = (out / f"stage{stage}" / "metrics.jsonl").read_text().splitlines()
        assert json.loads(metrics[-1])["step"] == steps
        assert not (out / f"probe{stage}").exists()  # the probes are removed, their logs kept
        probe_result = json.loads((out / f"probe{stage}.log").read_text().splitlines()[-1])
        assert probe_result["step"] == 3 and probe_result["final"] is None  # stopped, not exported
    model = load_pretrained(out / "delta")
    assert model.stage == 2
    assert model.config.projector.position == "fourier2d"  # stage 2 added the 2-D position signal
    general = json.loads((out / "val.json").read_text())
    assert set(general["tasks"]) >= {"classification", "vqa", "caption"}
    assert general["summary"]["turns_scored"] > 0 and not general["summary"]["errors"]
    detection = json.loads((out / "val_detection.json").read_text())
    assert "detection_hbb" in detection["tasks"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script would train")
def test_without_a_gpu_the_real_recipe_refuses_clearly(tmp_path):
    result = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env(),
    )  # fmt: skip
    assert result.returncode == 2
    assert "needs one" in result.stderr and "reproduce_nano.sh" in result.stderr
    assert not (tmp_path / "run").exists()
