"""``python -m train.soup``: weighted sums of checkpoints from one start, checked before they are summed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from earthgpt.config import get_preset
from earthgpt.model.checkpoint import delta_state, load_pretrained, save_pretrained
from earthgpt.model.earthgpt import EarthGPT
from earthgpt.model.tuning import apply_stage
from train.soup import main, parse_source


def _tuned(folder: Path, step: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """A tiny stage-2 model whose trainable tensors moved by ``step`` from the seed's start."""
    torch.manual_seed(seed)
    model = EarthGPT.from_config(get_preset("tiny"), pretrained=False, seed=seed)
    apply_stage(model, 2)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(step)
    save_pretrained(model, folder)
    return {name: t.clone() for name, t in delta_state(model).items()}


def test_the_soup_is_the_weighted_sum_of_each_tensor_and_loads(tmp_path: Path, capsys) -> None:
    a, b = _tuned(tmp_path / "a", 0.02), _tuned(tmp_path / "b", -0.04)
    assert main([str(tmp_path / "mid"), f"{tmp_path / 'a'}=0.5", f"{tmp_path / 'b'}=0.5"]) == 0
    assert "0.5 ×" in capsys.readouterr().out
    mid = delta_state(load_pretrained(tmp_path / "mid"))
    assert mid.keys() == a.keys()
    for name, tensor in mid.items():
        torch.testing.assert_close(tensor, (a[name] + b[name]) / 2)
    # past a, away from b: a + 0.5 (a - b)
    assert main([str(tmp_path / "ext"), f"{tmp_path / 'a'}=1.5", f"{tmp_path / 'b'}=-0.5"]) == 0
    ext = delta_state(load_pretrained(tmp_path / "ext"))
    name = next(n for n in a if n.endswith(".scale"))
    torch.testing.assert_close(ext[name], a[name] + 0.5 * (a[name] - b[name]))


def test_weights_that_do_not_sum_to_one_are_refused(tmp_path: Path, capsys) -> None:
    _tuned(tmp_path / "a", 0.02)
    _tuned(tmp_path / "b", -0.04)
    assert main([str(tmp_path / "s"), f"{tmp_path / 'a'}=0.5", f"{tmp_path / 'b'}=0.6"]) == 2
    assert "sum to 1.1" in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_checkpoints_of_different_bases_are_refused(tmp_path: Path, capsys) -> None:
    _tuned(tmp_path / "a", 0.02, seed=0)
    _tuned(tmp_path / "b", 0.02, seed=1)
    assert main([str(tmp_path / "s"), f"{tmp_path / 'a'}=0.5", f"{tmp_path / 'b'}=0.5"]) == 2
    assert "base components differ" in capsys.readouterr().err


def test_a_source_needs_a_numeric_weight() -> None:
    assert parse_source("runs/a=b/final=0.25") == (Path("runs/a=b/final"), 0.25)
    for bad in ("runs/final", "runs/final=half", "=0.5"):
        with pytest.raises(ValueError, match=r"expected FOLDER=WEIGHT|not a number"):
            parse_source(bad)


def test_a_fine_tune_that_added_the_position_signal_sums_with_its_start(tmp_path: Path) -> None:
    """The start has no 2-D position signal; the fine-tune added it (at zero) and trained it. The
    start counts as having it at zero, which is exactly what it computes: its half of the signal is
    zero, everything else is the plain average."""
    a = _tuned(tmp_path / "start", 0.02)
    cfg = get_preset("tiny")
    cfg.projector.position = "fourier2d"
    torch.manual_seed(0)
    model = EarthGPT.from_config(cfg, pretrained=False, seed=0)
    apply_stage(model, 2)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(-0.04)
        position = model.projector[-1].linear
        position.weight.normal_()
    save_pretrained(model, tmp_path / "tuned")
    b = {name: t.clone() for name, t in delta_state(model).items()}
    # the signal comes after the MLP (Linear, GELU, Linear)
    assert set(b) - set(a) == {"projector.3.linear.weight", "projector.3.linear.bias"}

    assert main([str(tmp_path / "mid"), f"{tmp_path / 'start'}=0.5", f"{tmp_path / 'tuned'}=0.5"]) == 0
    mixed = load_pretrained(tmp_path / "mid")
    assert mixed.config.projector.position == "fourier2d"
    mid = delta_state(mixed)
    assert mid.keys() == b.keys()
    for name, tensor in mid.items():
        torch.testing.assert_close(tensor, (a.get(name, torch.zeros_like(b[name])) + b[name]) / 2)
    # the start's own function: with the signal at zero it answers as it did without it
    assert main([str(tmp_path / "same"), f"{tmp_path / 'start'}=1", f"{tmp_path / 'tuned'}=0"]) == 0
    same, start = load_pretrained(tmp_path / "same"), load_pretrained(tmp_path / "start")
    tokens = torch.randn(1, 16, same.vision.out_channels)
    torch.testing.assert_close(same.projector(tokens), start.projector(tokens))
