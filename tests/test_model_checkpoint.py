"""Checkpoints: delta and full round trips give identical logits; base and shape checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from earthgpt.config import get_preset
from earthgpt.model.checkpoint import load_pretrained, save_pretrained
from earthgpt.model.earthgpt import EarthGPT
from earthgpt.model.tuning import apply_stage, merge_scale_shift, scale_shift_layers


def trained_tiny(stage: int, seed: int = 0) -> EarthGPT:
    """A tiny model whose stage-``stage`` parameters have moved away from their initial values."""
    model = EarthGPT.from_config(get_preset("tiny"), pretrained=False, seed=seed)
    generator = torch.Generator().manual_seed(1)
    for current in range(1, stage + 1):
        apply_stage(model, current)
        with torch.no_grad():
            for param in model.parameters():
                if param.requires_grad:
                    param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model


def _kind(name: str) -> str:
    if name.startswith("projector."):
        return "projector"
    if name.endswith((".scale", ".shift")):
        return "scale_shift"
    if ".self_attn." in name:
        return "attention"
    return "norm" if name.endswith("norm.weight") else name


def logits(model: EarthGPT) -> torch.Tensor:
    ids = torch.tensor([[1, 2, *[model.image_token_id] * 16, 5, 6, 7]])
    pixels = torch.linspace(-1, 1, 3 * 56 * 56).reshape(1, 3, 56, 56)
    with torch.no_grad():
        return model(ids, pixel_values=pixels).logits


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_delta_round_trip_is_exact(tmp_path: Path, stage: int) -> None:
    model = trained_tiny(stage)
    save_pretrained(model, tmp_path)
    loaded = load_pretrained(tmp_path)
    assert torch.equal(logits(loaded), logits(model))
    assert loaded.stage == stage and len(scale_shift_layers(loaded)) == (15 if stage == 2 else 0)
    saved = load_file(str(tmp_path / "model.safetensors"))
    kinds = {_kind(name) for name in saved}
    assert kinds == {0: {"projector"}, 1: {"projector", "attention", "norm"}}.get(
        stage, {"projector", "attention", "norm", "scale_shift"}
    )


def test_full_round_trip_is_exact(tmp_path: Path) -> None:
    model = trained_tiny(2)
    save_pretrained(model, tmp_path, delta=False)
    assert json.loads((tmp_path / "config.json").read_text())["kind"] == "full"
    assert torch.equal(logits(load_pretrained(tmp_path)), logits(model))


def test_delta_on_another_base_is_refused(tmp_path: Path) -> None:
    save_pretrained(trained_tiny(1, seed=0), tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["seed"] = 5  # the rebuilt base is now a different random model
    (tmp_path / "config.json").write_text(json.dumps(meta))
    message = r"trained on another base: base mismatch: expected random-tiny-seed0-"
    with pytest.raises(ValueError, match=message):
        load_pretrained(tmp_path)


def test_delta_must_fit_exactly(tmp_path: Path) -> None:
    save_pretrained(trained_tiny(1), tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["stage"] = 2  # the model would now expect scale/shift tensors too
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"does not fit the model: missing \['llm.lm_head.scale'"):
        load_pretrained(tmp_path)


def test_merged_models_are_not_saved(tmp_path: Path) -> None:
    model = trained_tiny(2)
    merge_scale_shift(model)
    with pytest.raises(ValueError, match="unmerge_scale_shift before saving"):
        save_pretrained(model, tmp_path)


def test_presets_and_bad_paths(tmp_path: Path) -> None:
    assert load_pretrained("tiny").config.name == "tiny"
    with pytest.raises(FileNotFoundError, match="neither a checkpoint folder, a preset"):
        load_pretrained(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="is not an EarthGPT checkpoint"):
        load_pretrained(tmp_path)
    # a hub id with no hub (HF_HUB_OFFLINE=1 in the tests): a clear message, at once
    with pytest.raises(FileNotFoundError, match=r"reachable hub id.*HF_HUB_OFFLINE"):
        load_pretrained("someone/earthgpt-7b")


def test_shipped_weights_take_the_preset_name(tmp_path: Path, monkeypatch) -> None:
    from earthgpt.inference import is_untrained_start
    from earthgpt.model import checkpoint

    monkeypatch.setitem(checkpoint.SHIPPED, "tiny", tmp_path / "absent")
    assert checkpoint.resolve_model("tiny") == "tiny" and is_untrained_start("tiny")
    model = EarthGPT.from_config(get_preset("tiny"), pretrained=False)
    with torch.no_grad():
        next(model.projector.parameters()).add_(1.0)
    save_pretrained(model, tmp_path / "shipped")
    monkeypatch.setitem(checkpoint.SHIPPED, "tiny", tmp_path / "shipped")
    assert checkpoint.resolve_model("tiny") == tmp_path / "shipped" and not is_untrained_start("tiny")
    assert torch.equal(logits(load_pretrained("tiny")), logits(model))


def test_delta_in_bfloat16_halves_the_file_and_loads_close(tmp_path: Path) -> None:
    model = trained_tiny(1)
    save_pretrained(model, tmp_path / "f32")
    save_pretrained(model, tmp_path / "bf16", dtype=torch.bfloat16)
    size = {k: (tmp_path / k / "model.safetensors").stat().st_size for k in ("f32", "bf16")}
    assert size["bf16"] < 0.6 * size["f32"]
    loaded = load_pretrained(tmp_path / "bf16")
    assert next(loaded.projector.parameters()).dtype == torch.float32
    assert torch.allclose(logits(loaded), logits(model), atol=0.05)


def test_delta_round_trip_on_the_bundled_nano_base(tmp_path: Path, nano_base: Path) -> None:
    model = EarthGPT.from_config(get_preset("nano"), pretrained=True)
    generator = torch.Generator().manual_seed(0)
    for stage in (1, 2):
        apply_stage(model, stage)
        with torch.no_grad():
            for param in model.parameters():
                if param.requires_grad:
                    param.add_(0.01 * torch.randn(param.shape, generator=generator))
    ids = torch.tensor([[1, *[model.image_token_id] * 64, 30, 31]])
    pixels = torch.linspace(-1, 1, 3 * 224 * 224).reshape(1, 3, 224, 224)
    with torch.no_grad():
        expected = model(ids, pixel_values=pixels).logits
        save_pretrained(model, tmp_path)
        assert torch.equal(load_pretrained(tmp_path)(ids, pixel_values=pixels).logits, expected)
