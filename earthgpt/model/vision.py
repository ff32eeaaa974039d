"""Visual perception: a multi-layer ViT branch and a multi-scale CNN branch, both frozen.

- ``ViTMultiLayer``: the hidden states of chosen DINOv2 layers, patch tokens only (the CLS and any
  register tokens dropped), concatenated on channels, one token per patch: global context.
- ``CNNMultiScale``: feature maps at chosen strides (4/8/16/32) of a CNN, each resized to one grid
  and concatenated on channels: local detail. A registry (``CNN_FEATURES``) picks the feature
  extractor by the config's ``arch``.
- ``VisualPerception``: both branches on the visual token grid (``sqrt(num_visual_tokens)`` a side),
  concatenated on channels and flattened to ``(B, N, C_vit + C_cnn)``.

Resizing (``resize_to_grid``): a map at least as large as the grid on both sides is reduced with
adaptive average pooling (every input pixel counts, no aliasing); a smaller one is enlarged with
bilinear interpolation. The paper upsamples the coarse CNN maps to the finest one and then pools;
resizing each map straight to the token grid gives the same kind of tokens at a fraction of the
memory, so that is what happens here.

The encoders never train: their parameters have ``requires_grad=False``, they stay in eval mode
whatever ``train()`` is called with, and they run under ``torch.no_grad()``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from earthgpt.config import CNN_STRIDES, IMAGENET_MEAN, IMAGENET_STD, CNNConfig, EarthGPTConfig, ViTConfig


def resize_to_grid(features: torch.Tensor, grid: int) -> torch.Tensor:
    """Resize ``(B, C, H, W)`` to ``(B, C, grid, grid)``: average pooling down, bilinear up."""
    height, width = features.shape[-2:]
    if (height, width) == (grid, grid):
        return features
    if height >= grid and width >= grid:
        return F.adaptive_avg_pool2d(features, grid)
    return F.interpolate(features, size=(grid, grid), mode="bilinear", align_corners=False)


def _param_dtype(module: nn.Module) -> torch.dtype:
    return next(p.dtype for p in module.parameters() if p.is_floating_point())


class ViTMultiLayer(nn.Module):
    """Patch tokens of several layers of a ``transformers.Dinov2Model``, concatenated on channels."""

    def __init__(self, encoder: nn.Module, layers: list[int]) -> None:
        super().__init__()
        num_layers = encoder.config.num_hidden_layers
        bad = [i for i in layers if not 1 <= i <= num_layers]
        if bad:
            raise ValueError(f"ViT layers {bad} outside 1..{num_layers} of the loaded encoder")
        self.encoder = encoder
        self.layers = list(layers)
        self.patch_size = int(encoder.config.patch_size)
        self.num_prefix_tokens = 1 + int(getattr(encoder.config, "num_register_tokens", 0))

    @property
    def out_channels(self) -> int:
        """Channels of the output map."""
        return int(self.encoder.config.hidden_size) * len(self.layers)

    @property
    def channel_groups(self) -> list[int]:
        """Channels per source, in output order: one group per chosen layer."""
        return [int(self.encoder.config.hidden_size)] * len(self.layers)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` → ``(B, C_vit, H / patch, W / patch)``."""
        batch, _, height, width = pixel_values.shape
        out = self.encoder(pixel_values.to(_param_dtype(self.encoder)), output_hidden_states=True)
        tokens = torch.cat([out.hidden_states[i][:, self.num_prefix_tokens :] for i in self.layers], dim=-1)
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        return tokens.transpose(1, 2).reshape(batch, self.out_channels, grid_h, grid_w)


class EfficientNetFeatures(nn.Module):
    """Stage-end outputs of an ``efficientnet_lite_pytorch.EfficientNet`` at chosen strides.

    A stage end is the last block that runs at a given output stride; strides are read from the
    stem and each block's depthwise convolution, so nothing depends on the block count. The blocks
    past the last chosen stage and the classification head never run, so they are dropped.
    EfficientNet-Lite was trained on inputs scaled to [-1, 1] (mean 127, std 128 on 0-255 in the
    reference TF code), not on ImageNet mean/std.
    """

    INPUT_MEAN = (0.5, 0.5, 0.5)
    INPUT_STD = (0.5, 0.5, 0.5)

    def __init__(self, backbone: nn.Module, strides: list[int]) -> None:
        super().__init__()
        self.backbone = backbone
        stride = backbone._conv_stem.stride[0]
        last_block_at: dict[int, int] = {}
        for index, block in enumerate(backbone._blocks):
            stride *= block._depthwise_conv.stride[0]
            last_block_at[stride] = index
        missing = [s for s in strides if s not in last_block_at]
        if missing:
            raise ValueError(
                f"EfficientNet has no blocks at strides {missing}; it has {sorted(last_block_at)}"
            )
        self.block_indices = [last_block_at[s] for s in strides]
        self.channels = [backbone._blocks[i]._bn2.num_features for i in self.block_indices]
        backbone._blocks = backbone._blocks[: max(self.block_indices) + 1]
        backbone._conv_head = backbone._bn1 = backbone._fc = nn.Identity()

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps, one per chosen stride, finest first."""
        net = self.backbone
        x = net._swish(net._bn0(net._conv_stem(pixel_values)))
        wanted = set(self.block_indices)
        maps = []
        for index, block in enumerate(net._blocks):
            x = block(x)
            if index in wanted:
                maps.append(x)
        return maps


class ConvNextFeatures(nn.Module):
    """Stage outputs of a ``transformers.ConvNextModel``; stage ``i`` (1..4) has stride ``2**(i + 1)``."""

    INPUT_MEAN = IMAGENET_MEAN
    INPUT_STD = IMAGENET_STD

    def __init__(self, backbone: nn.Module, strides: list[int]) -> None:
        super().__init__()
        if backbone.config.num_stages != len(CNN_STRIDES):
            raise ValueError(
                f"ConvNeXt with {backbone.config.num_stages} stages; expected {len(CNN_STRIDES)}"
            )
        self.backbone = backbone
        self.stage_indices = [CNN_STRIDES.index(s) + 1 for s in strides]
        self.channels = [backbone.config.hidden_sizes[i - 1] for i in self.stage_indices]

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps, one per chosen stride, finest first."""
        hidden_states = self.backbone(pixel_values, output_hidden_states=True).hidden_states
        return [hidden_states[i] for i in self.stage_indices]


CNN_FEATURES: dict[str, type[nn.Module]] = {
    "efficientnet-lite0": EfficientNetFeatures,
    "convnext": ConvNextFeatures,
}


class CNNMultiScale(nn.Module):
    """Feature maps of a CNN at several strides, resized to one grid and concatenated on channels."""

    def __init__(
        self,
        arch: str,
        backbone: nn.Module,
        strides: list[int],
        image_mean: tuple[float, ...] | list[float] = IMAGENET_MEAN,
        image_std: tuple[float, ...] | list[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if arch not in CNN_FEATURES:
            raise ValueError(f"unknown CNN arch {arch!r}; known: {', '.join(CNN_FEATURES)}")
        self.arch = arch
        self.features = CNN_FEATURES[arch](backbone, strides)
        # Pixels arrive normalised with the model's (image_mean, image_std); re-normalise them to
        # what this backbone was trained on: x_cnn = (x * std + mean - mean_cnn) / std_cnn.
        mean, std = torch.tensor(image_mean), torch.tensor(image_std)
        cnn_mean, cnn_std = torch.tensor(self.features.INPUT_MEAN), torch.tensor(self.features.INPUT_STD)
        self.register_buffer("_in_scale", (std / cnn_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_in_shift", ((mean - cnn_mean) / cnn_std).view(1, 3, 1, 1), persistent=False)

    @property
    def out_channels(self) -> int:
        """Channels of the output map."""
        return sum(self.features.channels)

    @property
    def channel_groups(self) -> list[int]:
        """Channels per source, in output order: one group per stage."""
        return list(self.features.channels)

    def forward(self, pixel_values: torch.Tensor, grid: int) -> torch.Tensor:
        """``(B, 3, H, W)`` → ``(B, C_cnn, grid, grid)``."""
        pixel_values = pixel_values * self._in_scale + self._in_shift
        maps = self.features(pixel_values.to(_param_dtype(self.features)))
        return torch.cat([resize_to_grid(m, grid) for m in maps], dim=1)


class VisualPerception(nn.Module):
    """Both frozen branches on one token grid: ``(B, 3, H, W)`` → ``(B, grid², C_vit + C_cnn)``."""

    def __init__(self, vit: ViTMultiLayer, cnn: CNNMultiScale, grid: int) -> None:
        super().__init__()
        self.vit = vit
        self.cnn = cnn
        self.grid = grid
        self.requires_grad_(False)
        self.eval()

    @property
    def out_channels(self) -> int:
        """Channels of one visual token."""
        return self.vit.out_channels + self.cnn.out_channels

    @property
    def channel_groups(self) -> list[int]:
        """Channels of each source (a ViT layer or a CNN stage) in token order; they sum to
        :attr:`out_channels`."""
        return self.vit.channel_groups + self.cnn.channel_groups

    def train(self, mode: bool = True) -> VisualPerception:
        """The encoders are frozen: they stay in eval mode whatever ``mode`` says."""
        return super().train(False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Visual tokens, row-major over the grid."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be (B, 3, H, W), got {tuple(pixel_values.shape)}")
        with torch.no_grad():
            vit = resize_to_grid(self.vit(pixel_values), self.grid)
            cnn = self.cnn(pixel_values, self.grid).to(vit.dtype)
        return torch.cat([vit, cnn], dim=1).flatten(2).transpose(1, 2)


# ----------------------------------------------------------------------------- building


def _random_vit(cfg: ViTConfig) -> nn.Module:
    from transformers import Dinov2Config, Dinov2Model

    return Dinov2Model(
        Dinov2Config(
            hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
            image_size=cfg.image_size, patch_size=cfg.patch_size,
        )
    )


def _random_cnn(cfg: CNNConfig) -> nn.Module:
    if cfg.arch == "efficientnet-lite0":
        from efficientnet_lite_pytorch import EfficientNet

        return EfficientNet.from_name("efficientnet-lite0")
    if cfg.arch == "convnext":
        from transformers import ConvNextConfig, ConvNextModel

        return ConvNextModel(
            ConvNextConfig(num_stages=4, hidden_sizes=cfg.stage_channels, depths=cfg.stage_depths)
        )
    raise ValueError(f"unknown CNN arch {cfg.arch!r}; known: {', '.join(CNN_FEATURES)}")


def _check_vit(cfg: ViTConfig, encoder: nn.Module) -> None:
    found = (encoder.config.hidden_size, encoder.config.num_hidden_layers, encoder.config.patch_size)
    expected = (cfg.hidden_size, cfg.num_layers, cfg.patch_size)
    if found != expected:
        raise ValueError(
            f"ViT from {cfg.source!r} has (hidden_size, num_layers, patch_size) = {found}; "
            f"the config expects {expected}"
        )


def build_visual_perception(
    config: EarthGPTConfig, *, pretrained: bool, dtype: torch.dtype = torch.float32
) -> VisualPerception:
    """Both branches from the config: pretrained through ``earthgpt.model.loaders``, else random."""
    if pretrained:
        from earthgpt.model.loaders import load_cnn, load_vit

        for part in (config.vit, config.cnn):
            if part.source is None:
                raise ValueError(f"config {config.name!r} names no pretrained source for {part.arch}")
        encoder = load_vit(config.vit.source, dtype=dtype)
        _check_vit(config.vit, encoder)
        backbone = load_cnn(config.cnn.arch, config.cnn.source)
    else:
        encoder, backbone = _random_vit(config.vit), _random_cnn(config.cnn)
    vit = ViTMultiLayer(encoder.to(dtype), config.vit.layers)
    cnn = CNNMultiScale(
        config.cnn.arch, backbone.to(dtype), config.cnn.strides, config.image_mean, config.image_std
    )
    if cnn.out_channels != config.cnn.out_channels:
        raise ValueError(
            f"{config.cnn.arch} gives {cnn.out_channels} channels at strides {config.cnn.strides}; "
            f"the config expects {config.cnn.out_channels}"
        )
    return VisualPerception(vit, cnn, config.grid_size)
