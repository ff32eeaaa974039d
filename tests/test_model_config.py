"""Model configs: JSON round trip, unknown keys, preset registry, validation, shrinking."""

from __future__ import annotations

import json

import pytest

from earthgpt.config import PRESETS, EarthGPTConfig, get_preset, shrink_for_test


@pytest.mark.parametrize("name", list(PRESETS))
def test_json_round_trip(name: str) -> None:
    config = get_preset(name)
    assert EarthGPTConfig.from_json(config.to_json()) == config


def test_preset_facts() -> None:
    nano, big = get_preset("nano"), get_preset("13b")
    assert (nano.grid_size, nano.vit.layers, nano.cnn.strides) == (8, [3, 6, 9, 12], [4, 8, 16, 32])
    assert nano.vit.out_channels + nano.cnn.out_channels == 4 * 384 + 24 + 40 + 112 + 320
    assert (big.grid_size, big.vit.layers) == (16, [6, 12, 18, 24])
    assert big.llm.source == "meta-llama/Llama-2-13b-hf"
    assert get_preset("tiny").vit.source is None


def test_unknown_keys_are_named() -> None:
    data = get_preset("tiny").to_dict()
    data["colour"] = 1
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['EarthGPTConfig.colour'\]; known in"):
        EarthGPTConfig.from_dict(data)
    data = json.loads(get_preset("tiny").to_json())
    data["llm"]["heads"] = 4
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['EarthGPTConfig.llm.heads'\].*'num_heads'"):
        EarthGPTConfig.from_dict(data)
    data["llm"] = {"num_heads": "four"}
    with pytest.raises(ValueError, match=r"EarthGPTConfig.llm.num_heads: expected int, got 'four'"):
        EarthGPTConfig.from_dict(data)


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown model preset '70b'; known presets: tiny, nano, 7b, 13b"):
        get_preset("70b")


def test_validation_messages() -> None:
    data = get_preset("tiny").to_dict()
    with pytest.raises(ValueError, match="num_visual_tokens must be a positive square, got 15"):
        EarthGPTConfig.from_dict({**data, "num_visual_tokens": 15})
    with pytest.raises(ValueError, match=r"vit.layers \[9\] outside 1..4"):
        EarthGPTConfig.from_dict({**data, "vit": {**data["vit"], "layers": [9]}})
    with pytest.raises(ValueError, match=r"unknown cnn\.arch 'resnet'; known: efficientnet-lite0, convnext"):
        EarthGPTConfig.from_dict({**data, "cnn": {**data["cnn"], "arch": "resnet"}})
    with pytest.raises(ValueError, match=r"efficientnet-lite0 has stage channels \[24, 40, 112, 320\]"):
        EarthGPTConfig.from_dict({**data, "cnn": {**data["cnn"], "arch": "efficientnet-lite0"}})


def test_shrink_keeps_architecture_kinds() -> None:
    big = get_preset("7b")
    small = shrink_for_test(big)
    assert small.vit.layers == [1, 2, 3, 4] and small.cnn.arch == "convnext"
    assert small.llm.num_kv_heads == small.llm.num_heads  # Llama-2-7B is multi-head, not grouped
    nano = shrink_for_test(get_preset("nano"))
    assert nano.llm.num_kv_heads < nano.llm.num_heads and nano.llm.tie_word_embeddings
    assert all(part.source is None for part in (small.vit, small.cnn, small.llm))
