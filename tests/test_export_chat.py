"""``earthgpt chat --model`` on a delta whose base is random (the tiny preset, as the test configs
train it): the run's export and ``python -m train.export_weights`` keep the tokenizer the run
trained with beside the delta, and loading rebuilds the base from the recorded config and seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from earthgpt.cli import main as cli
from earthgpt.config import get_preset
from earthgpt.model.checkpoint import TOKENIZER_DIR, load_pretrained, save_pretrained
from earthgpt.model.earthgpt import EarthGPT
from earthgpt.model.tuning import apply_stage
from train.build import byte_level_tokenizer
from train.export_weights import main as export


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Path:
    """A tiny stage-2 run's final folder (a delta and its byte-level tokenizer), exported."""
    root = tmp_path_factory.mktemp("random_base_delta")
    config = get_preset("tiny")
    config.image_token_id = 259  # the byte-level tokenizer's <image>, as in train/configs/tiny_stage*.yaml
    model = EarthGPT.from_config(config, pretrained=False, seed=0)
    for stage in (1, 2):
        apply_stage(model, stage)
        with torch.no_grad():
            for param in model.parameters():
                if param.requires_grad:
                    param.add_(0.01)
    save_pretrained(model, root / "final")
    byte_level_tokenizer().save_pretrained(str(root / "final" / TOKENIZER_DIR))  # as export_final does
    assert export([str(root / "final"), str(root / "shipped")]) == 0
    return root / "shipped"


@pytest.fixture
def png(tmp_path) -> Path:
    path = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


def test_the_exported_delta_keeps_the_tokenizer_and_rebuilds_its_random_base(shipped):
    assert (shipped / TOKENIZER_DIR / "tokenizer.json").is_file()
    model = load_pretrained(shipped)
    assert model.stage == 2 and not model.pretrained_base and model.seed == 0
    assert model.tokenizer.convert_tokens_to_ids("<image>") == model.config.image_token_id == 259


def test_chat_answers_with_a_delta_on_a_random_base(shipped, png, capsys):
    args = ["chat", str(png), "Describe the image.", "--model", str(shipped), "--max-new-tokens", "3"]
    assert cli([*args, "--json"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["model"] == str(shipped) and report["warning"] is None and "error" not in err
    assert isinstance(report["answer"], str)
