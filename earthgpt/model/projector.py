"""The learnable projection from visual tokens to the LLM width, chosen from a registry by type.

- ``mlp2x_gelu`` (default, as in LLaVA-1.5): Linear(in, out) → GELU → Linear(out, out).
- ``linear``: one Linear(in, out).
"""

from __future__ import annotations

from collections.abc import Callable

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


def build_projector(cfg: ProjectorConfig, in_dim: int, out_dim: int) -> nn.Module:
    """The projector named by ``cfg.type``, mapping ``(..., in_dim)`` to ``(..., out_dim)``."""
    if cfg.type not in PROJECTORS:
        raise ValueError(f"unknown projector type {cfg.type!r}; known: {', '.join(PROJECTORS)}")
    if in_dim < 1 or out_dim < 1:
        raise ValueError(f"projector dimensions must be positive, got in_dim={in_dim}, out_dim={out_dim}")
    return PROJECTORS[cfg.type](in_dim, out_dim)
