"""The one optimiser recipe (pretraining, GLUE fine-tuning, SBERT): AdamW without weight decay on biases
and norms, and a step-wise learning-rate schedule (linear warmup, then linear / cosine decay or constant)."""
from __future__ import annotations

import functools
import logging
import math
from typing import Any, Callable

import torch
from torch import nn

log = logging.getLogger(__name__)


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


def adamw_kernel(device: torch.device) -> dict[str, bool]:
    """The fastest AdamW implementation for `device`: fused (one kernel for all parameters) on CUDA, else
    foreach (a few multi-tensor ops). Same update either way, up to float rounding."""
    kernel = {"fused": True} if device.type == "cuda" else {"foreach": True}
    _log_kernel(device.type, next(iter(kernel)))
    return kernel


@functools.lru_cache(maxsize=None)
def _log_kernel(device_type: str, kernel: str) -> None:
    log.info("AdamW: %s kernel on %s", kernel, device_type)  # once per process and device type


def build_optimizer(module: nn.Module, lr: float, weight_decay: float, warmup: int, total: int,
                    decay: str = "linear", min_ratio: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
                    eps: float = 1e-8) -> dict[str, Any]:
    """AdamW (its fastest kernel for the parameters' device) + the warmup schedule, stepped every optimizer
    step: what configure_optimizers returns."""
    groups = adamw_param_groups(module, weight_decay)
    device = next((p.device for g in groups for p in g["params"]), torch.device("cpu"))
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **adamw_kernel(device))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_schedule(warmup, total, decay, min_ratio))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
