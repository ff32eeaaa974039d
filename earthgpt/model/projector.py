"""The learnable projection from visual tokens to the LLM width, chosen from a registry by type.

- ``mlp2x_gelu`` (default, as in LLaVA-1.5): Linear(in, out) → GELU → Linear(out, out).
- ``linear``: one Linear(in, out).

With ``input_norm="group_layernorm"`` a :class:`GroupLayerNorm` comes first: one LayerNorm per
source (each ViT layer, each CNN stage), since the sources' scales differ by orders of magnitude.

With ``position="fourier2d"`` a :class:`GridPosition2D` comes last: it adds to each token a learned
function of where the token's cell lies on the image (``ProjectorConfig``).

With ``context="mean"`` a :class:`GlobalContext` adds to every token a learned linear map of the
image's mean token (after the input norm), so that each token carries what the whole image shows
(``ProjectorConfig``).
"""

from __future__ import annotations

import math
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
POSITIONS = ("none", "fourier2d")
CONTEXTS = ("none", "mean")


def _zero_linear(in_dim: int, out_dim: int) -> nn.Linear:
    """A ``Linear`` whose weight and bias start at zero. ``skip_init``: no draw from the global RNG,
    so adding a module built on it leaves a run's random stream as is."""
    linear = nn.utils.skip_init(nn.Linear, in_dim, out_dim)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


class GroupLayerNorm(nn.Module):
    """A LayerNorm over each consecutive group of channels on its own, each with its own affine."""

    def __init__(self, groups: Sequence[int]) -> None:
        super().__init__()
        self.groups = [int(g) for g in groups]
        self.norms = nn.ModuleList(nn.LayerNorm(g) for g in self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.groups, dim=-1)
        return torch.cat([norm(part) for norm, part in zip(self.norms, parts, strict=True)], dim=-1)


class GridPosition2D(nn.Module):
    """Adds ``linear(features(x, y))`` to each visual token, where (x, y) in [0, 1] is the centre of
    the token's cell on its square grid (row-major, x to the right, y down, as the tokens are laid
    out) and ``features`` are x, y and the sines and cosines of 2π·f·x and 2π·f·y at the
    ``FREQUENCIES`` (cycles per image side). The linear map starts at zero, so adding this module to
    a trained projector leaves its output unchanged until it trains. The grid side is read off the
    token count, so one module serves an 8 × 8 and a 16 × 16 grid alike."""

    FREQUENCIES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = _zero_linear(2 + 4 * len(self.FREQUENCIES), dim)

    def features(self, side: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``(side * side, 2 + 4 · len(FREQUENCIES))`` features of the cell centres, row-major."""
        centres = (torch.arange(side, device=device, dtype=torch.float32) + 0.5) / side
        y, x = torch.meshgrid(centres, centres, indexing="ij")
        xy = torch.stack([x.reshape(-1), y.reshape(-1)], dim=-1)  # (N, 2)
        freqs = torch.tensor(self.FREQUENCIES, device=device, dtype=torch.float32)
        angles = 2 * math.pi * xy[:, :, None] * freqs  # (N, 2, F)
        parts = [xy, angles.sin().flatten(1), angles.cos().flatten(1)]
        return torch.cat(parts, dim=-1).to(dtype)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[-2]
        side = math.isqrt(n)
        if tokens.dim() < 2 or side * side != n:
            raise ValueError(
                f"GridPosition2D needs (..., tokens, channels) with a square number of tokens, got "
                f"shape {tuple(tokens.shape)}"
            )
        weight = self.linear.weight
        return tokens + self.linear(self.features(side, weight.device, weight.dtype)).to(tokens.dtype)


def add_grid_position(projector: nn.Module, dim: int) -> nn.Sequential:
    """``projector`` followed by a fresh :class:`GridPosition2D` of width ``dim``. A ``Sequential``
    projector gets it appended in place, so its own parameters keep their names (a trained
    projector's weights load into the result)."""
    position = GridPosition2D(dim)
    first = next(projector.parameters(), None)
    if first is not None:
        position.to(device=first.device, dtype=first.dtype)
    if isinstance(projector, nn.Sequential):
        projector.append(position)
        return projector
    return nn.Sequential(projector, position)


class GlobalContext(nn.Module):
    """``linear(mean of the image's tokens)``, the same vector for every token of an image; the
    linear map starts at zero, so adding this module to a trained projector leaves its output
    unchanged until it trains. It reads the projector's input after the input norm (see
    :class:`ContextProjector`)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = _zero_linear(in_dim, out_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(..., N, in_dim)`` → ``(..., 1, out_dim)``."""
        return self.linear(tokens.mean(dim=-2, keepdim=True))


class ContextProjector(nn.Sequential):
    """A projector ``Sequential`` whose :class:`GlobalContext` members are added to its output
    instead of being chained: each reads the tokens as the leading :class:`GroupLayerNorm` leaves
    them (or the input, without one). The other members run in order as in a ``Sequential``, so
    their parameter names are those of the projector without the context."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        members = list(self)
        normed = tokens
        if isinstance(members[0], GroupLayerNorm):
            normed, members = members[0](tokens), members[1:]
        out, contexts = normed, []
        for member in members:
            if isinstance(member, GlobalContext):
                contexts.append(member)
            else:
                out = member(out)
        for context in contexts:
            out = out + context(normed).to(out.dtype)
        return out


def add_global_context(projector: nn.Module, in_dim: int, out_dim: int) -> ContextProjector:
    """``projector`` with a fresh :class:`GlobalContext` appended, as a :class:`ContextProjector`
    whose other members keep their names (a trained projector's weights load into the result)."""
    context = GlobalContext(in_dim, out_dim)
    first = next(projector.parameters(), None)
    if first is not None:
        context.to(device=first.device, dtype=first.dtype)
    members = list(projector) if isinstance(projector, nn.Sequential) else [projector]
    return ContextProjector(*members, context)


def build_projector(
    cfg: ProjectorConfig, in_dim: int, out_dim: int, groups: Sequence[int] | None = None
) -> nn.Module:
    """The projector named by ``cfg.type``, mapping ``(..., in_dim)`` to ``(..., out_dim)``.
    ``groups`` (channels per visual source, summing to ``in_dim``) is needed by ``group_layernorm``."""
    if cfg.type not in PROJECTORS:
        raise ValueError(f"unknown projector type {cfg.type!r}; known: {', '.join(PROJECTORS)}")
    if cfg.input_norm not in INPUT_NORMS:
        raise ValueError(f"unknown projector input_norm {cfg.input_norm!r}; known: {', '.join(INPUT_NORMS)}")
    if cfg.position not in POSITIONS:
        raise ValueError(f"unknown projector position {cfg.position!r}; known: {', '.join(POSITIONS)}")
    if cfg.context not in CONTEXTS:
        raise ValueError(f"unknown projector context {cfg.context!r}; known: {', '.join(CONTEXTS)}")
    if in_dim < 1 or out_dim < 1:
        raise ValueError(f"projector dimensions must be positive, got in_dim={in_dim}, out_dim={out_dim}")
    projector = PROJECTORS[cfg.type](in_dim, out_dim)
    if cfg.input_norm != "none":
        if groups is None or sum(groups) != in_dim or min(groups) < 1:
            raise ValueError(f"group_layernorm needs channel groups summing to {in_dim}, got {groups}")
        projector = nn.Sequential(GroupLayerNorm(groups), projector)
    if cfg.position == "fourier2d":
        projector = add_grid_position(projector, out_dim)
    if cfg.context == "mean":
        projector = add_global_context(projector, in_dim, out_dim)
    return projector
