"""The learnable projection from visual tokens to the LLM width, chosen from a registry by type.

- ``mlp2x_gelu`` (default, as in LLaVA-1.5): Linear(in, out) → GELU → Linear(out, out).
- ``linear``: one Linear(in, out).

With ``input_norm="group_layernorm"`` a :class:`GroupLayerNorm` comes first: one LayerNorm per
source (each ViT layer, each CNN stage), since the sources' scales differ by orders of magnitude.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from earthgpt.config import ProjectorConfig


def _mlp2x_gelu(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


def _linear(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Linear(in_dim, out_dim)


PROJECTORS: dict[str, Callable[[int, int], nn.Module]] = {
    "mlp2x_gelu": _mlp2x_gelu,
    "linear": _linear,
}


INPUT_NORMS = ("none", "group_layernorm")


class GroupLayerNorm(nn.Module):
    """A LayerNorm over each consecutive group of channels on its own, each with its own affine."""

    def __init__(self, groups: Sequence[int]) -> None:
        super().__init__()
        self.groups = [int(g) for g in groups]
        self.norms = nn.ModuleList(nn.LayerNorm(g) for g in self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.groups, dim=-1)
        return torch.cat([norm(part) for norm, part in zip(self.norms, parts, strict=True)], dim=-1)


def build_projector(
    cfg: ProjectorConfig, in_dim: int, out_dim: int, groups: Sequence[int] | None = None
) -> nn.Module:
    """The projector named by ``cfg.type``, mapping ``(..., in_dim)`` to ``(..., out_dim)``.
    ``groups`` (channels per visual source, summing to ``in_dim``) is needed by ``group_layernorm``."""
    if cfg.type not in PROJECTORS:
        raise ValueError(f"unknown projector type {cfg.type!r}; known: {', '.join(PROJECTORS)}")
    if cfg.input_norm not in INPUT_NORMS:
        raise ValueError(f"unknown projector input_norm {cfg.input_norm!r}; known: {', '.join(INPUT_NORMS)}")
    if in_dim < 1 or out_dim < 1:
        raise ValueError(f"projector dimensions must be positive, got in_dim={in_dim}, out_dim={out_dim}")
    projector = PROJECTORS[cfg.type](in_dim, out_dim)
    if cfg.input_norm == "none":
        return projector
    if groups is None or sum(groups) != in_dim or min(groups) < 1:
        raise ValueError(f"group_layernorm needs channel groups summing to {in_dim}, got {groups}")
    return nn.Sequential(GroupLayerNorm(groups), projector)
