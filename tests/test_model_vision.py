"""Visual perception on tiny random encoders: shapes, which layers/stages feed the tokens, freezing."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import ConvNextConfig, ConvNextModel, Dinov2Config, Dinov2Model

from earthgpt.config import get_preset
from earthgpt.model.vision import (
    CNNMultiScale,
    ViTMultiLayer,
    build_visual_perception,
    resize_to_grid,
)


def tiny_dinov2(layers: int = 4) -> Dinov2Model:
    config = Dinov2Config(hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, image_size=56)
    return Dinov2Model(config).eval()


def test_resize_pools_down_and_interpolates_up() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    pooled = resize_to_grid(x, 2)
    assert torch.equal(pooled[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
    up = resize_to_grid(torch.full((1, 3, 1, 1), 7.0), 3)
    assert up.shape == (1, 3, 3, 3) and torch.allclose(up, torch.full_like(up, 7.0))
    assert resize_to_grid(x, 4) is x


def test_vit_concatenates_patch_tokens_of_chosen_layers() -> None:
    encoder = tiny_dinov2()
    vit = ViTMultiLayer(encoder, [2, 4])
    pixels = torch.randn(2, 3, 56, 70)
    out = vit(pixels)
    assert out.shape == (2, 64, 4, 5)
    hidden = encoder(pixels, output_hidden_states=True).hidden_states
    layer2 = hidden[2][:, 1:]  # CLS dropped
    # token (row 1, col 3) is patch 1 * 5 + 3; its first 32 channels come from layer 2
    assert torch.allclose(out[:, :32, 1, 3], layer2[:, 8])
    assert torch.allclose(out[:, 32:, 0, 0], hidden[4][:, 1])


def test_vit_rejects_layers_the_encoder_lacks() -> None:
    with pytest.raises(ValueError, match=r"ViT layers \[5\] outside 1..4"):
        ViTMultiLayer(tiny_dinov2(), [2, 5])


def test_convnext_takes_the_four_stage_outputs() -> None:
    backbone = ConvNextModel(ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1])).eval()
    cnn = CNNMultiScale("convnext", backbone, [4, 8, 16, 32])
    maps = cnn.features(torch.randn(1, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [(8, 16, 16), (16, 8, 8), (32, 4, 4), (64, 2, 2)]
    assert cnn(torch.randn(1, 3, 64, 64), 4).shape == (1, 120, 4, 4)
    assert CNNMultiScale("convnext", backbone, [8, 32]).out_channels == 80


def test_efficientnet_lite0_stage_ends_at_strides_4_to_32() -> None:
    from efficientnet_lite_pytorch import EfficientNet

    backbone = EfficientNet.from_name("efficientnet-lite0").eval()
    cnn = CNNMultiScale("efficientnet-lite0", backbone, [4, 8, 16, 32])
    assert cnn.features.block_indices == [2, 4, 10, 15]
    assert cnn.features.channels == [24, 40, 112, 320]
    maps = cnn.features(torch.randn(1, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [(24, 16, 16), (40, 8, 8), (112, 4, 4), (320, 2, 2)]
    assert cnn(torch.randn(1, 3, 64, 64), 8).shape == (1, 496, 8, 8)


def test_unknown_cnn_arch_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown CNN arch 'resnet'; known: efficientnet-lite0, convnext"):
        CNNMultiScale("resnet", torch.nn.Identity(), [4])


@pytest.mark.parametrize("arch", ["convnext", "efficientnet-lite0"])
def test_visual_perception_tokens_and_freezing(arch: str) -> None:
    config = get_preset("tiny")
    if arch == "efficientnet-lite0":
        config.cnn = dataclasses.replace(
            config.cnn, arch=arch, stage_channels=[24, 40, 112, 320], stage_depths=[]
        )
    perception = build_visual_perception(config, pretrained=False)
    tokens = perception(torch.randn(3, 3, 56, 56))
    assert tokens.shape == (3, 16, config.vit.out_channels + config.cnn.out_channels)
    assert not tokens.requires_grad
    assert not any(p.requires_grad for p in perception.parameters())
    perception.train()
    assert not any(m.training for m in perception.modules())


def test_visual_perception_rejects_non_rgb_input() -> None:
    perception = build_visual_perception(get_preset("tiny"), pretrained=False)
    with pytest.raises(ValueError, match=r"pixel_values must be \(B, 3, H, W\), got \(1, 4, 56, 56\)"):
        perception(torch.randn(1, 4, 56, 56))
