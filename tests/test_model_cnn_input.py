"""Each CNN sees pixels normalised the way its weights were trained, whatever the model's own mean/std."""

from __future__ import annotations

import torch

from earthgpt.config import IMAGENET_MEAN, IMAGENET_STD, get_preset
from earthgpt.model.vision import CNNMultiScale, _random_cnn


def test_efficientnet_gets_minus_one_to_one_inputs():
    torch.manual_seed(0)
    cfg = get_preset("nano").cnn
    cnn = CNNMultiScale(cfg.arch, _random_cnn(cfg).eval(), cfg.strides, IMAGENET_MEAN, IMAGENET_STD).eval()
    raw = torch.rand(1, 3, 64, 64)  # pixels in [0, 1]
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        through_model = cnn((raw - mean) / std, grid=4)
        expected = torch.cat(
            [torch.nn.functional.adaptive_avg_pool2d(m, 4) for m in cnn.features(raw * 2 - 1)], dim=1
        )
    torch.testing.assert_close(through_model, expected, rtol=1e-4, atol=1e-5)
