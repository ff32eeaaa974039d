"""Training stages: exact trainable sets, where gradients flow, scale/shift identity, merge/unmerge."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from earthgpt.config import get_preset
from earthgpt.model.earthgpt import EarthGPT
from earthgpt.model.tuning import (
    ScaleShiftLinear,
    apply_stage,
    merge_scale_shift,
    parameter_report,
    scale_shift_layers,
    trainable_parameter_names,
    unmerge_scale_shift,
)

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def tiny() -> EarthGPT:
    return EarthGPT.from_config(get_preset("tiny"), pretrained=False)


def batch(model: EarthGPT) -> dict[str, torch.Tensor]:
    ids = torch.tensor([[1, 2, *[model.image_token_id] * 16, 5, 6, 7]])
    return {"input_ids": ids, "pixel_values": torch.randn(1, 3, 56, 56), "labels": ids}


def names_with_grad(model: EarthGPT) -> set[str]:
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_stage1_trains_projector_attention_and_norms_only() -> None:
    model = tiny()
    apply_stage(model, 1)
    expected = {"projector.0.weight", "projector.0.bias", "projector.2.weight", "projector.2.bias",
                "llm.model.norm.weight"}
    for i in range(2):
        layer = f"llm.model.layers.{i}"
        expected |= {f"{layer}.{part}.weight" for part in LINEARS[:4]}
        expected |= {f"{layer}.input_layernorm.weight", f"{layer}.post_attention_layernorm.weight"}
    assert set(trainable_parameter_names(model)) == expected
    model(**batch(model)).loss.backward()
    assert names_with_grad(model) == expected
    assert model.stage == 1


def test_stage1_can_train_fewer_attention_projections_and_the_delta_holds_only_those(tmp_path) -> None:
    from dataclasses import replace

    from earthgpt.model.checkpoint import delta_state, load_pretrained, save_pretrained

    config = replace(get_preset("tiny"), stage1_attention=["q_proj", "v_proj"])
    model = EarthGPT.from_config(config, pretrained=False)
    apply_stage(model, 1)
    attention = {n for n in trainable_parameter_names(model) if ".self_attn." in n}
    qv = ("q_proj", "v_proj")
    assert attention == {f"llm.model.layers.{i}.self_attn.{p}.weight" for i in range(2) for p in qv}
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.01)
    apply_stage(model, 2)
    in_delta = {n for n in delta_state(model) if ".self_attn." in n and not n.endswith(("scale", "shift"))}
    assert {n.replace(".base.", ".") for n in in_delta} == attention  # stage 2 wraps each Linear
    save_pretrained(model, tmp_path / "ckpt")
    loaded = load_pretrained(tmp_path / "ckpt")
    assert loaded.config.stage1_attention == ["q_proj", "v_proj"]
    data = batch(model)
    torch.testing.assert_close(loaded(**data).logits, model(**data).logits)
    with pytest.raises(ValueError, match="stage1_attention"):
        replace(get_preset("tiny"), stage1_attention=["gate_proj"])


def test_stage2_trains_scale_and_shift_of_every_llm_linear() -> None:
    model = tiny()
    apply_stage(model, 1)
    data = batch(model)
    before = model(**data).logits
    apply_stage(model, 2)
    wrapped = [f"llm.model.layers.{i}.{part}" for i in range(2) for part in LINEARS] + ["llm.lm_head"]
    expected = {f"{name}.{v}" for name in wrapped for v in ("scale", "shift")}
    assert set(trainable_parameter_names(model)) == expected
    assert torch.equal(model(**data).logits, before)  # scale 1, shift 0: the identity
    model(**data).loss.backward()
    assert names_with_grad(model) == expected
    apply_stage(model, 2)  # idempotent: nothing wrapped twice
    assert len(scale_shift_layers(model)) == len(wrapped)
    with pytest.raises(ValueError, match="stage 1 runs before stage 2"):
        apply_stage(model, 1)
    with pytest.raises(ValueError, match="stage must be 1 or 2, got 3"):
        apply_stage(model, 3)


def test_stage2_can_keep_training_what_stage1_trained_and_the_delta_does_not_grow(tmp_path) -> None:
    from dataclasses import replace

    from earthgpt.model.checkpoint import delta_state, load_pretrained, save_pretrained

    qv = ["q_proj", "v_proj"]
    plain = EarthGPT.from_config(replace(get_preset("tiny"), stage1_attention=qv), pretrained=False)
    apply_stage(plain, 1)
    stage1 = set(trainable_parameter_names(plain))
    apply_stage(plain, 2)
    scale_shift = set(trainable_parameter_names(plain))
    config = replace(get_preset("tiny"), stage1_attention=["q_proj", "v_proj"], stage2_tunes_stage1=True)
    model = EarthGPT.from_config(config, pretrained=False)
    apply_stage(model, 1)
    apply_stage(model, 2)
    trained = set(trainable_parameter_names(model))
    assert trained == scale_shift | {n.replace("_proj.weight", "_proj.base.weight") for n in stage1}
    model(**batch(model)).loss.backward()
    assert names_with_grad(model) == trained
    assert set(delta_state(model)) == set(delta_state(plain))  # the same tensors, the same file size
    with torch.no_grad():
        model.llm.model.layers[0].self_attn.q_proj.base.weight.add_(0.05)
    save_pretrained(model, tmp_path / "ckpt")
    loaded = load_pretrained(tmp_path / "ckpt")
    assert loaded.config.stage2_tunes_stage1
    data = batch(model)
    torch.testing.assert_close(loaded(**data).logits, model(**data).logits)


def test_parameter_report_counts_exactly() -> None:
    model = tiny()
    cfg = model.config
    d, inter, layers = cfg.llm.hidden_size, cfg.llm.intermediate_size, cfg.llm.num_layers
    kv = d // cfg.llm.num_heads * cfg.llm.num_kv_heads
    attention = layers * (2 * d * d + 2 * d * kv)
    norms = (2 * layers + 1) * d
    c = cfg.vit.out_channels + cfg.cnn.out_channels
    projector = c * d + d + d * d + d
    apply_stage(model, 1)
    report = parameter_report(model)
    assert report["llm_attention"] == {"trainable": attention, "total": attention}
    assert report["llm_norms"] == {"trainable": norms, "total": norms}
    assert report["projector"] == {"trainable": projector, "total": projector}
    assert report["llm_mlp"] == {"trainable": 0, "total": layers * 3 * d * inter}
    assert report["llm_embeddings"]["total"] == cfg.llm.vocab_size * d  # tied: counted once
    assert report["all"]["trainable"] == attention + norms + projector
    apply_stage(model, 2)
    outputs = layers * (d + 2 * kv + d + 2 * inter + d) + cfg.llm.vocab_size
    report = parameter_report(model)
    assert report["scale_shift"] == {"trainable": 2 * outputs, "total": 2 * outputs}
    assert report["all"]["trainable"] == 2 * outputs


def perturb(model: EarthGPT) -> None:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in scale_shift_layers(model):
            layer.scale.copy_(1 + 0.1 * torch.randn(layer.scale.shape, generator=generator))
            layer.shift.copy_(0.1 * torch.randn(layer.shift.shape, generator=generator))


def test_merge_and_unmerge_keep_outputs() -> None:
    model = tiny()
    apply_stage(model, 2)
    perturb(model)
    data = batch(model)
    wrapped = model(**data).logits
    embeddings = model.llm.get_input_embeddings().weight.clone()
    assert merge_scale_shift(model) == 15
    assert torch.allclose(model(**data).logits, wrapped, atol=1e-5)
    lm_head = model.llm.lm_head
    assert lm_head.base.bias is not None
    assert lm_head.base.weight is not model.llm.get_input_embeddings().weight
    assert torch.equal(model.llm.get_input_embeddings().weight, embeddings)  # tied table untouched
    assert not trainable_parameter_names(model)
    assert unmerge_scale_shift(model) == 15
    assert torch.allclose(model(**data).logits, wrapped, atol=1e-5)
    assert lm_head.base.bias is None and lm_head.base.weight is model.llm.get_input_embeddings().weight
    q_proj = model.llm.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, ScaleShiftLinear) and q_proj.base.bias is None


class PackedLinear(nn.Linear):
    """Stands in for a quantized layer (bitsandbytes' Linear4bit also subclasses nn.Linear)."""


def test_merge_refuses_quantized_layers_and_changes_nothing() -> None:
    model = tiny()
    layer = model.llm.model.layers[1].mlp
    packed = PackedLinear(layer.up_proj.in_features, layer.up_proj.out_features, bias=False)
    layer.up_proj = packed
    apply_stage(model, 2)
    with pytest.raises(TypeError, match=r"cannot merge scale/shift into model.layers.1.mlp.up_proj: it is a "
                                        r"test_model_tuning.PackedLinear"):
        merge_scale_shift(model)
    assert not any(layer.merged for layer in scale_shift_layers(model))


def lora_tiny(rank: int = 4, modules: tuple[str, ...] = ("gate_proj", "up_proj", "down_proj")) -> EarthGPT:
    from dataclasses import replace

    config = replace(get_preset("tiny"), stage2_lora_rank=rank, stage2_lora_modules=list(modules))
    return EarthGPT.from_config(config, pretrained=False)


def test_stage2_low_rank_adapters_start_as_the_identity_and_train() -> None:
    model = lora_tiny()
    apply_stage(model, 1)
    data = batch(model)
    before = model(**data).logits
    apply_stage(model, 2)
    assert torch.equal(model(**data).logits, before)  # B is zero: nothing changes until it trains
    mlp = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    lora = {f"llm.model.layers.{i}.{part}.{m}" for i in range(2) for part in mlp
            for m in ("lora_a", "lora_b")}
    trained = set(trainable_parameter_names(model))
    assert lora <= trained and not any("self_attn" in n and "lora" in n for n in trained)
    cfg = model.config
    d, inter = cfg.llm.hidden_size, cfg.llm.intermediate_size
    size = 2 * 4 * 3 * (d + inter)  # two layers, rank 4, (in + out) of each of the three projections
    assert parameter_report(model)["lora"] == {"trainable": size, "total": size}
    model(**data).loss.backward()
    with_grad = names_with_grad(model)
    # the first step moves B only (A's gradient goes through B, which is zero)
    assert {n for n in lora if n.endswith("lora_b")} <= with_grad
    apply_stage(model, 2)  # idempotent: the adapters are not made again
    assert set(trainable_parameter_names(model)) == trained
    layer = model.llm.model.layers[0].mlp.up_proj
    with pytest.raises(ValueError, match="rank-4 adapter; asked for rank 8"):
        layer.add_low_rank(8)


def test_low_rank_adapters_merge_unmerge_and_round_trip_a_delta(tmp_path) -> None:
    from earthgpt.model.checkpoint import delta_state, load_pretrained, save_pretrained

    model = lora_tiny(modules=("q_proj", "down_proj"))
    apply_stage(model, 1)
    apply_stage(model, 2)
    perturb(model)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in scale_shift_layers(model):
            if layer.lora_b is not None:
                layer.lora_b.copy_(0.1 * torch.randn(layer.lora_b.shape, generator=generator))
    data = batch(model)
    wrapped = model(**data).logits
    assert merge_scale_shift(model) == 15
    torch.testing.assert_close(model(**data).logits, wrapped, atol=1e-5, rtol=1e-4)
    unmerge_scale_shift(model)
    torch.testing.assert_close(model(**data).logits, wrapped, atol=1e-5, rtol=1e-4)
    in_delta = {n for n in delta_state(model) if "lora" in n}
    assert in_delta == {f"llm.model.layers.{i}.{p}.{m}" for i in range(2)
                        for p in ("self_attn.q_proj", "mlp.down_proj") for m in ("lora_a", "lora_b")}
    save_pretrained(model, tmp_path / "ckpt")
    loaded = load_pretrained(tmp_path / "ckpt")
    assert loaded.config.stage2_lora_rank == 4
    torch.testing.assert_close(loaded(**data).logits, wrapped)


def test_low_rank_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="stage2_lora_rank must be 0"):
        lora_tiny(rank=-1)
    with pytest.raises(ValueError, match="stage2_lora_modules"):
        lora_tiny(modules=("lm_head",))
    with pytest.raises(ValueError, match="stage2_lora_modules"):
        lora_tiny(modules=())
