"""The one optimiser recipe (pretraining, GLUE fine-tuning, SBERT): AdamW without weight decay on biases
and norms, and a step-wise learning-rate schedule (linear warmup, then linear / cosine decay or constant)."""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn


def adamw_param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: matrices decay; biases, norm weights and other vectors do not."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        (no_decay if param.ndim < 2 or "norm" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_schedule(warmup: int, total: int, decay: str = "linear", min_ratio: float = 0.0) -> Callable[[int], float]:
    """LR factor per step: linear warmup to the peak, then linear / cosine decay to min_ratio at `total`
    (or constant)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if decay == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        left = 1 - progress if decay == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
        return min_ratio + (1 - min_ratio) * left

    return factor


def build_optimizer(module: nn.Module, lr: float, weight_decay: float, warmup: int, total: int,
                    decay: str = "linear", min_ratio: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
                    eps: float = 1e-8) -> dict[str, Any]:
    """AdamW + the warmup schedule, stepped every optimizer step: what configure_optimizers returns."""
    optimizer = torch.optim.AdamW(adamw_param_groups(module, weight_decay), lr=lr, betas=betas, eps=eps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_schedule(warmup, total, decay, min_ratio))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
