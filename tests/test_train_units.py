"""Training parts on their own: config overrides, length-grouped batches, checkpoint files, the
feature cache and its invalidation, the FLOP formula, every shipped YAML."""

from __future__ import annotations

import os

import pytest
import torch
import yaml
from train_helpers import CONFIGS

from earthgpt.config import get_preset
from earthgpt.model.earthgpt import EarthGPT
from earthgpt.model.tuning import apply_stage
from train import checkpoints
from train.build import model_config
from train.config import load_config
from train.features import FeatureCache, precompute, vision_fingerprint
from train.flops import flop_model, peak_tflops_for
from train.sampler import epoch_batches, global_batches

SOURCE = "data.sources=[mmrs=x.jsonl]"


def test_overrides_are_typed_and_unknown_keys_are_named():
    cfg = load_config(
        CONFIGS / "tiny_stage1.yaml",
        [SOURCE, "optim.lr=1e-4", "optim.max_steps=3", "run.peak_tflops=312", "data.tasks=[caption,vqa]"],
    )
    assert cfg.optim.lr == 1e-4 and cfg.optim.max_steps == 3 and cfg.run.peak_tflops == 312.0
    assert cfg.data.tasks == ["caption", "vqa"] and cfg.model.config == {"image_token_id": 259}
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['optim.lrr'\].*'lr'"):
        load_config(CONFIGS / "tiny_stage1.yaml", [SOURCE, "optim.lrr=1"])
    with pytest.raises(ValueError, match=r"optim\.max_steps: expected int, got 'many'"):
        load_config(CONFIGS / "tiny_stage1.yaml", [SOURCE, "optim.max_steps=many"])
    with pytest.raises(ValueError, match=r"run\.mixed_precision must be one of"):
        load_config(CONFIGS / "tiny_stage1.yaml", [SOURCE, "run.mixed_precision=fp8"])
    with pytest.raises(ValueError, match=r"set model\.init_from"):
        load_config(CONFIGS / "tiny_stage2.yaml", [SOURCE, "model.init_from=null"])
    # a dotted key into a mapping-valued setting sets one entry; naming the setting replaces it whole
    cfg = load_config(CONFIGS / "tiny_stage1.yaml", [SOURCE, "model.config.stage2_lora_rank=8",
                                                     "data.task_repeats={vqa: 2, caption: 1}",
                                                     "data.task_repeats.vqa=3",
                                                     "data.task_repeats.vqa/count=2.5"])
    assert cfg.model.config == {"image_token_id": 259, "stage2_lora_rank": 8}
    assert cfg.data.task_repeats == {"vqa": 3, "caption": 1, "vqa/count": 2.5}
    cfg = load_config(CONFIGS / "tiny_stage1.yaml", [SOURCE, "model.config={llm: {heads: 4}}"])
    assert "image_token_id" not in cfg.model.config
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['model.config.llm.heads'\].*'num_heads'"):
        model_config(cfg)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_stage_config_loads(path):
    cfg = load_config(path, [SOURCE])
    assert cfg.stage in (1, 2)
    get_preset(cfg.model.preset)


@pytest.mark.parametrize("path", sorted((CONFIGS / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_are_valid_yaml(path):
    data = yaml.safe_load(path.read_text())
    assert data["distributed_type"] in ("NO", "MULTI_GPU", "MULTI_CPU", "FSDP", "DEEPSPEED")


def test_length_grouped_batches_are_deterministic_and_split_across_ranks():
    lengths = [int(x) for x in torch.randint(10, 500, (203,), generator=torch.Generator().manual_seed(0))]
    kwargs = {"seed": 3, "epoch": 0, "group_by_length": True}
    first = global_batches(lengths, 8, **kwargs)
    assert first == global_batches(lengths, 8, **kwargs) and len(first) == 203 // 8
    assert first != global_batches(lengths, 8, seed=3, epoch=1, group_by_length=True)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first)
    plain = global_batches(lengths, 8, seed=3, epoch=0, group_by_length=False)
    assert spread < sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plain) / 3
    ranks = [epoch_batches(lengths, 4, world_size=2, rank=r, **kwargs) for r in range(2)]
    for batch, low, high in zip(first, *ranks, strict=True):
        assert sorted(low + high) == sorted(batch) and not set(low) & set(high)


def test_checkpoint_verification_rejects_damaged_and_incomplete_folders(tmp_path):
    for step in (1, 2):
        temp, final = checkpoints.temp_dir(tmp_path, step), checkpoints.checkpoint_dir(tmp_path, step)
        temp.mkdir(parents=True)
        checkpoints.write_trainable(temp, {"w": torch.full((4,), float(step))}, {})
        checkpoints.write_rank_state(temp, 0, {"rng": checkpoints.rng_state()})
        checkpoints.finalize(temp, final, {"step": step})
    assert checkpoints.latest_checkpoint(tmp_path) == checkpoints.checkpoint_dir(tmp_path, 2)
    (checkpoints.checkpoint_dir(tmp_path, 2) / "rank0.pt").write_bytes(b"cut")
    assert checkpoints.latest_checkpoint(tmp_path) == checkpoints.checkpoint_dir(tmp_path, 1)
    (checkpoints.checkpoint_dir(tmp_path, 1) / checkpoints.STATE).unlink()
    assert checkpoints.latest_checkpoint(tmp_path) is None


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(5)
    checkpoints.write_rank_state(tmp_path, 0, {"rng": checkpoints.rng_state()})
    expected = (torch.rand(3), np.random.rand(), random.random())
    checkpoints.set_rng_state(checkpoints.read_rank_state(tmp_path, 0)["rng"])
    again = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(again[0], expected[0]) and again[1:] == expected[1:]


def _tiny(seed: int) -> EarthGPT:
    model = EarthGPT.from_config(get_preset("tiny"), pretrained=False, seed=seed)
    apply_stage(model, 1)
    return model


def _images(tmp_path, count: int) -> tuple[list, dict]:
    """``count`` small files standing for images, and seeded random pixels for each."""
    images = []
    for i in range(count):
        images.append(tmp_path / f"im{i}.bin")
        images[-1].write_bytes(bytes([i]) * 10)
    pixels = {
        p: torch.randn(3, 56, 56, generator=torch.Generator().manual_seed(i)) for i, p in enumerate(images)
    }
    return images, pixels


def test_feature_cache_hits_and_invalidation(tmp_path):
    model = _tiny(0)
    images, pixels = _images(tmp_path, 3)
    fingerprint = vision_fingerprint(model.vision, model.config, torch.float32)
    cache = FeatureCache(tmp_path / "cache", fingerprint)
    assert precompute(cache, images * 2, model.vision, pixels.__getitem__, progress=False) == 3
    assert precompute(cache, images, model.vision, pixels.__getitem__, progress=False) == 0
    direct = model.vision(pixels[images[1]][None])[0]
    assert torch.allclose(cache(images[1]), direct, atol=1e-5)  # batched vs single: rounding only
    os.utime(images[1], ns=(1, 1))  # the image changed on disk
    assert images[1] not in cache and images[0] in cache
    assert vision_fingerprint(_tiny(1).vision, model.config, torch.float32) != fingerprint
    assert vision_fingerprint(model.vision, model.config, torch.bfloat16) != fingerprint
    other = get_preset("tiny")
    other.image_size = 70
    assert vision_fingerprint(model.vision, other, torch.float32) != fingerprint
    with pytest.raises(KeyError, match="precompute first"):
        cache(images[1])


def test_precompute_skips_what_another_run_wrote_meanwhile(tmp_path):
    """Two runs filling one cache at once: what the other run wrote while this one encoded is not
    encoded again (each image's entry written once)."""
    model = _tiny(0)
    images, pixels = _images(tmp_path, 4)
    cache = FeatureCache(tmp_path / "cache", vision_fingerprint(model.vision, model.config, torch.float32))
    encoded = []

    def encode(batch):
        encoded.append(batch.shape[0])
        if len(encoded) == 1:  # meanwhile the other run writes every image still missing
            for path in images:
                if path not in cache:
                    cache.put(path, model.vision(pixels[path][None])[0])
        return model.vision(batch)

    assert precompute(cache, images, encode, pixels.__getitem__, batch_size=1, progress=False) == 1
    assert encoded == [1]
    assert all(path in cache for path in images)


def test_flop_formula_counts_trainable_matmuls_and_known_gpus():
    model = _tiny(0)
    counts = flop_model(model, vision_per_image=1000.0)
    cfg = model.config.llm
    attention = cfg.num_layers * (2 * cfg.hidden_size**2 + 2 * cfg.hidden_size * cfg.hidden_size // 2)
    assert counts.llm_matmul_trainable == attention
    assert (
        counts.llm_matmul
        == attention
        + 3 * cfg.num_layers * cfg.hidden_size * cfg.intermediate_size
        + cfg.vocab_size * cfg.hidden_size
    )
    flops = counts.step_flops(tokens=10, visual_tokens=4, seq_len=8, images_encoded=1)
    per_token = 4 * counts.llm_matmul + 2 * attention + 12 * cfg.num_layers * cfg.hidden_size * 8
    assert flops == 10 * per_token + 4 * 4 * counts.projector + 1000.0
    assert peak_tflops_for("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops_for("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops_for("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops_for("Some Future GPU") is None


def test_projector_gets_its_own_learning_rate():
    from train.optimizer import make_optimizer
    from train.training_module import TrainingModule

    module = TrainingModule(_tiny(0))
    cfg = load_config(CONFIGS / "tiny_stage1.yaml", [SOURCE, "optim.lr=1e-4", "optim.projector_lr=1e-3"])
    optimizer = make_optimizer(module, cfg)
    projector = {id(p) for p in module.model.projector.parameters()}
    rates = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert {rates[i] for i in projector} == {1e-3}
    assert {r for i, r in rates.items() if i not in projector} == {1e-4}
    assert len(rates) == sum(1 for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("addition", ["position", "context"])
def test_position_signal_and_context_get_their_own_lr_else_the_projectors(addition) -> None:
    from earthgpt.model.projector import add_global_context, add_grid_position
    from train.optimizer import make_optimizer
    from train.training_module import TrainingModule

    module = TrainingModule(_tiny(0))
    model = module.model
    width = model.config.llm.hidden_size
    if addition == "position":
        model.projector = add_grid_position(model.projector, width)
    else:
        model.projector = add_global_context(model.projector, model.vision.out_channels, width)
    added = {id(p) for p in model.projector[-1].parameters()}
    projector = {id(p) for p in model.projector.parameters()} - added
    common = [SOURCE, "optim.lr=1e-4", "optim.projector_lr=1e-3"]
    own = {"position": 3e-2, "context": 2e-2}[addition]
    for extra, expected in (([], 1e-3), (["optim.position_lr=3e-2", "optim.context_lr=2e-2"], own)):
        optimizer = make_optimizer(module, load_config(CONFIGS / "tiny_stage1.yaml", [*common, *extra]))
        rates = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
        assert {rates[i] for i in added} == {expected}
        assert {rates[i] for i in projector} == {1e-3}


def test_stage2_gives_stage1_parameters_their_own_learning_rate() -> None:
    from train.optimizer import make_optimizer
    from train.training_module import TrainingModule

    model = _tiny(0)  # after stage 1
    model.config.stage2_tunes_stage1 = True
    apply_stage(model, 2)
    module = TrainingModule(model)
    cfg = load_config(CONFIGS / "tiny_stage2.yaml", [SOURCE, "optim.lr=3e-3", "optim.projector_lr=5e-4",
                                                     "optim.stage1_lr=1e-4"])
    optimizer = make_optimizer(module, cfg)
    rates = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    by_rate = {}
    for i, r in rates.items():
        name = names[i]
        vector = name.endswith(("scale", "shift"))
        kind = "projector" if name.startswith("projector.") else "vector" if vector else "llm"
        by_rate.setdefault(kind, set()).add(r)
    assert by_rate == {"projector": {5e-4}, "vector": {3e-3}, "llm": {1e-4}}
    assert len(rates) == sum(1 for p in module.parameters() if p.requires_grad)


def test_stage2_low_rank_adapters_get_lora_lr_else_lr() -> None:
    from train.optimizer import make_optimizer
    from train.training_module import TrainingModule

    model = _tiny(0)  # after stage 1
    model.config.stage2_lora_rank = 2
    apply_stage(model, 2)
    module = TrainingModule(model)
    names = {id(p): n for n, p in model.named_parameters()}
    for extra, expected in (([], 3e-3), (["optim.lora_lr=2e-4"], 2e-4)):
        cfg = load_config(CONFIGS / "tiny_stage2.yaml", [SOURCE, "optim.lr=3e-3", *extra])
        rates = {id(p): g["lr"] for g in make_optimizer(module, cfg).param_groups for p in g["params"]}
        lora = {r for i, r in rates.items() if ".lora_" in names[i]}
        vectors = {r for i, r in rates.items() if names[i].endswith(("scale", "shift"))}
        assert lora == {expected} and vectors == {3e-3}
        assert len(rates) == sum(1 for p in module.parameters() if p.requires_grad)


def test_bf16_falls_back_to_float32_on_a_cpu_without_native_bf16(monkeypatch, caplog) -> None:
    """2026-12-04: on an AVX2-only CPU bf16 autocast is emulated (0.9 GFLOP/s a core against 67 in
    float32), and a stage-2 step of the CPU recipe took 8 minutes instead of seconds."""
    import logging

    from train import run

    assert isinstance(run._native_cpu_bf16(), bool)  # the real probe answers on this machine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(run, "_native_cpu_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="train.run"):
        assert run.mixed_precision_for("bf16") == "no"
    assert "no native bf16 matrix multiply: training in float32" in caplog.text
    assert run.mixed_precision_for("no") == "no" and run.mixed_precision_for("fp16") == "fp16"
    monkeypatch.setattr(run, "_native_cpu_bf16", lambda: True)
    assert run.mixed_precision_for("bf16") == "bf16"
    monkeypatch.setattr(run, "_native_cpu_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU trains in bf16 as asked
    assert run.mixed_precision_for("bf16") == "bf16"
