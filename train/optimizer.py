"""The optimizer and its learning-rate schedule: AdamW in parameter groups, warm-up then cosine decay."""

from __future__ import annotations

import math

import torch
from torch import nn

from train.config import TrainConfig


def cosine_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int, min_ratio: float):
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` × lr at ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay only on matrices (none on norms, biases, scale/shift vectors); the
    projector at ``optim.projector_lr`` when set (it starts from random, the LLM parts do not)."""
    projector = getattr(getattr(model, "model", None), "projector", None)
    projector_ids = {id(p) for p in projector.parameters()} if projector is not None else set()
    groups = []
    for is_projector in (False, True):
        params = [
            p for p in model.parameters() if p.requires_grad and (id(p) in projector_ids) == is_projector
        ]
        lr = cfg.optim.projector_lr if is_projector and cfg.optim.projector_lr else cfg.optim.lr
        groups += [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.optim.weight_decay, "lr": lr},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "lr": lr},
        ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps
    )
