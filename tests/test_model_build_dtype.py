"""Building without a float32 copy: random parts are made in the target dtype, and a full checkpoint
loads into a model built empty (meta device) with the file's tensors assigned, ties kept."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_model
from torch.utils._python_dispatch import TorchDispatchMode

from earthgpt.config import get_preset, shrink_for_test
from earthgpt.model.earthgpt import EarthGPT
from earthgpt.model.loaders import assign_weights


class LargestFloat32(TorchDispatchMode):
    """Records the largest float32 tensor any operation creates while active."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32:
                self.numel = max(self.numel, tensor.numel())
        return out


def test_random_bf16_build_makes_no_float32_copy_of_the_big_tensors() -> None:
    config = get_preset("tiny")
    embedding = config.llm.vocab_size * config.llm.hidden_size
    with LargestFloat32() as seen:
        model = EarthGPT.from_config(config, pretrained=False, dtype=torch.bfloat16, seed=1)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert 0 < seen.numel < embedding // 8  # only small temporaries (RoPE frequencies, ViT init)
    with LargestFloat32() as seen:  # the check itself: a float32 build is seen
        EarthGPT.from_config(config, pretrained=False, dtype=torch.float32, seed=1)
    assert seen.numel >= embedding
    assert torch.get_default_dtype() == torch.float32  # the build restores the default dtype


@pytest.mark.parametrize("preset", ["tiny", "7b", "nano"])
def test_full_checkpoint_loads_into_an_empty_build(preset: str, tmp_path) -> None:
    config = get_preset("tiny") if preset == "tiny" else shrink_for_test(get_preset(preset))
    model = EarthGPT.from_config(config, pretrained=False, dtype=torch.bfloat16, seed=2)
    save_model(model, str(tmp_path / "model.safetensors"))  # as a full checkpoint holds it
    empty = EarthGPT.from_config(config, pretrained=False, dtype=torch.bfloat16, seed=2, empty=True)
    assert all(p.is_meta for p in empty.parameters()) and empty.base_identity is None
    assign_weights(empty, tmp_path / "model.safetensors")
    expected, found = model.state_dict(), empty.state_dict()
    assert found.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(found[name], tensor), name
    assert not any(p.requires_grad for p in empty.parameters())
    llm = empty.llm
    tied = llm.lm_head.weight is llm.model.embed_tokens.weight
    assert tied == config.llm.tie_word_embeddings
    ids = torch.tensor([[5, 6, 7]])
    torch.testing.assert_close(empty(ids).logits, model(ids).logits)


def test_empty_build_refuses_pretrained_and_a_foreign_file(tmp_path) -> None:
    config = get_preset("tiny")
    with pytest.raises(ValueError, match="random base"):
        EarthGPT.from_config(config, pretrained=True, empty=True)
    other = shrink_for_test(get_preset("7b"))
    save_model(EarthGPT.from_config(other, pretrained=False, seed=0), str(tmp_path / "model.safetensors"))
    empty = EarthGPT.from_config(config, pretrained=False, empty=True)
    with pytest.raises(ValueError, match="does not fit the model"):
        assign_weights(empty, tmp_path / "model.safetensors")
