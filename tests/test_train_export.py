"""``python -m train.export_weights``: the shipped delta, in bf16, within its size budget."""

from __future__ import annotations

from pathlib import Path

import torch

from earthgpt.config import get_preset
from earthgpt.model.checkpoint import load_pretrained, read_meta, save_pretrained
from earthgpt.model.earthgpt import EarthGPT
from earthgpt.model.tuning import apply_stage
from train.export_weights import main


def _trained_tiny(folder: Path) -> EarthGPT:
    model = EarthGPT.from_config(get_preset("tiny"), pretrained=False)
    apply_stage(model, 1)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.01)
    apply_stage(model, 2)
    save_pretrained(model, folder)
    return model


def test_export_writes_a_bf16_delta_that_loads(tmp_path: Path, capsys) -> None:
    model = _trained_tiny(tmp_path / "run")
    assert main([str(tmp_path / "run"), str(tmp_path / "shipped")]) == 0
    assert "stage 2" in capsys.readouterr().out
    meta = read_meta(tmp_path / "shipped")
    assert meta["kind"] == "delta" and meta["stage"] == 2
    loaded = load_pretrained(tmp_path / "shipped")
    ids = torch.tensor([[1, 2, *[model.image_token_id] * 16, 5, 6]])
    pixels = torch.zeros(1, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, pixel_values=pixels).logits,
                                   model(ids, pixel_values=pixels).logits, atol=0.05, rtol=0.05)


def test_export_refuses_a_delta_over_budget(tmp_path: Path, capsys) -> None:
    _trained_tiny(tmp_path / "run")
    assert main([str(tmp_path / "run"), str(tmp_path / "shipped"), "--max-mb", "0.0001"]) == 2
    assert "over the" in capsys.readouterr().err and not (tmp_path / "shipped").exists()
