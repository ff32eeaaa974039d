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
    projector at ``optim.projector_lr`` when set (it starts from random, the LLM parts do not); in
    stage 2, the LLM parameters other than scale/shift (trained when the model config's
    ``stage2_tunes_stage1`` is set) at ``optim.stage1_lr`` when set; the projector's 2-D position
    signal at ``optim.position_lr`` and its global context at ``optim.context_lr`` when set; stage
    2's low-rank adapters at ``optim.lora_lr`` when set."""
    from earthgpt.model.projector import GlobalContext, GridPosition2D
    from earthgpt.model.tuning import low_rank_parameters, scale_shift_layers

    inner = getattr(model, "model", None)
    projector = getattr(inner, "projector", None)
    projector_ids = {id(p) for p in projector.parameters()} if projector is not None else set()
    projector_parts = list(projector.modules()) if projector is not None else []

    def ids_of(kind: type) -> set[int]:
        return {id(p) for m in projector_parts if isinstance(m, kind) for p in m.parameters()}

    position_ids, context_ids = ids_of(GridPosition2D), ids_of(GlobalContext)
    llm = getattr(inner, "llm", None)
    layers = scale_shift_layers(llm) if llm is not None else []
    scale_shift_ids = {id(p) for layer in layers for p in (layer.scale, layer.shift)}
    lora_ids = {id(p) for p in low_rank_parameters(llm)} if llm is not None else set()

    def rate(param: nn.Parameter) -> float:
        if id(param) in lora_ids:
            return cfg.optim.lora_lr or cfg.optim.lr
        if id(param) in position_ids and cfg.optim.position_lr:
            return cfg.optim.position_lr
        if id(param) in context_ids and cfg.optim.context_lr:
            return cfg.optim.context_lr
        if id(param) in projector_ids:
            return cfg.optim.projector_lr or cfg.optim.lr
        if scale_shift_ids and id(param) not in scale_shift_ids:
            return cfg.optim.stage1_lr or cfg.optim.lr
        return cfg.optim.lr

    by_rate: dict[float, list[nn.Parameter]] = {}
    for param in model.parameters():
        if param.requires_grad:
            by_rate.setdefault(rate(param), []).append(param)
    groups = []
    for lr, params in by_rate.items():
        groups += [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.optim.weight_decay, "lr": lr},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "lr": lr},
        ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps
    )
