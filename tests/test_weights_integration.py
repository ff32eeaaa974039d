"""The real offline base: conversion from the bundled packages, reload, and what each part computes.

Marked ``slow`` but run by default. The base is prepared once into ``$EARTHGPT_CACHE`` (or
``~/.cache/earthgpt``), about a minute on two cores the first time; later runs reuse it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import torch

from earthgpt import identity
from earthgpt.model import base_cache, convert_bundled, loaders, sources

log = logging.getLogger(__name__)

PROMPT = "What is a satellite image? Answer in one sentence."


@pytest.fixture(scope="session")
def smollm(nano_base: Path):
    started = time.perf_counter()
    model, tokenizer = loaders.load_llm(sources.BUNDLED)
    log.info("load_llm(bundled): %.1f s", time.perf_counter() - started)
    return model, tokenizer


def test_llm_answers_a_chat_prompt_coherently(smollm) -> None:
    model, tokenizer = smollm
    assert model.config.hidden_size == 576 and model.config.num_hidden_layers == 30
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    messages = [{"role": "user", "content": PROMPT}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    assert tokenizer.decode(inputs["input_ids"][0]).endswith("<|im_start|>assistant\n")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=60, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    answer = tokenizer.decode(new, skip_special_tokens=True).strip()
    assert new[-1] == tokenizer.eos_token_id, f"no end of turn within 60 tokens: {answer!r}"
    words = answer.lower().split()
    assert 6 <= len(words) <= 50 and "satellite" in words, answer
    assert answer.count(".") <= 2 and len(set(words)) > 0.6 * len(words), answer  # one sentence, no loops


def test_vit_matches_onnxruntime(nano_base: Path) -> None:
    vit = loaders.load_vit(sources.BUNDLED)
    config = vit.config
    assert (config.hidden_size, config.num_hidden_layers, config.patch_size) == (384, 12, 14)
    onnx_path = convert_bundled.package_file(convert_bundled.VIT_PACKAGE, convert_bundled.VIT_FILE)
    assert convert_bundled.compare_with_onnxruntime(vit, onnx_path, seed=1) < convert_bundled.VIT_TOLERANCE


def test_cnn_features_and_stages(nano_base: Path) -> None:
    cnn = loaders.load_cnn("efficientnet-lite0", sources.BUNDLED)
    assert not torch.allclose(cnn._bn1.running_var, torch.ones_like(cnn._bn1.running_var))  # trained stats
    pixels = torch.randn(1, 3, 224, 224)
    stages: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        assert cnn.extract_features(pixels).shape == (1, 1280, 7, 7)
        x = cnn._swish(cnn._bn0(cnn._conv_stem(pixels)))
        for block in cnn._blocks:
            x = block(x)
            stages[224 // x.shape[-1]] = x  # the last block at each stride
    shapes = {stride: tuple(t.shape[1:]) for stride, t in stages.items()}
    assert shapes == {2: (16, 112, 112), 4: (24, 56, 56), 8: (40, 28, 28), 16: (112, 14, 14), 32: (320, 7, 7)}


def test_manifest_checksums_match_the_files(nano_base: Path) -> None:
    manifest = base_cache.read_manifest(nano_base.parent)
    assert set(manifest["components"]) == set(base_cache.COMPONENTS)
    identities = {}
    for role, info in manifest["components"].items():
        identities[role] = identity.weight_folder_identity(nano_base / role, info["name"])
        assert identities[role]["files"] == info["files"], role
        assert info["source"]["package"] in {p.dist for p in convert_bundled.ALL_PACKAGES}
    base = identity.combine_base_identity(identities, prefix=base_cache.BASE_NAME)
    assert base["base_id"] == manifest["base_id"]
    identity.verify_identity(identities["llm"], sources.source_identity("llm", sources.BUNDLED))
