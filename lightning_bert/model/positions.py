"""Position schemes: one registry, name -> module built once per encoder and shared by all layers.

Each name is declared, with what the config and FLOP count need to know, in config.POSITION_SCHEMES;
the attention kinds that accept it in config.ATTENTION_KINDS.

`scheme(input_ids, token_type_ids, attention_mask, position_ids=None) -> context`, handed to every
attention layer. position_ids [B, L] (document-masked packing: restarting at each packed document) or
None = 0..L-1. Absolute positions need no context: they are added to the input embeddings
(model/encoder.py). Relative schemes ignore position_ids: within a document i - j is the same either
way, and pairs across documents are masked.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from lightning_bert.config import POSITION_SCHEMES
from lightning_bert.model.config import EncoderConfig, layer_specs
from lightning_bert.model.registry import Registry

POSITIONS = Registry("model.positions")


def register_positions(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Register a position scheme under `name`, which config.POSITION_SCHEMES declares."""
    if name not in POSITION_SCHEMES:
        raise KeyError(f"position scheme {name!r} is not declared in lightning_bert/config.py POSITION_SCHEMES")
    return POSITIONS.register(name)


@register_positions("absolute")
class AbsoluteInputPositions(nn.Module):
    """Learned absolute positions: the table is added at the input (model/encoder.py Embeddings), so
    there is nothing to compute per forward."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor], attention_mask: Optional[Tensor],
                position_ids: Optional[Tensor] = None) -> Any:
        return None


@dataclass
class RotaryContext:
    """cos and sin per RoPE base, once per forward; each layer reads its own base's pair."""

    tables: dict[float, tuple[Tensor, Tensor]]  # theta -> (cos, sin), fp32 [1 or B, L, head_dim]


@register_positions("rope")
class RotaryPositions(nn.Module):
    """RoPE (Su et al. 2021) in transformers' ModernBERT convention: inverse frequencies
    theta^(-2i/d), angles = position x frequency, cos/sin of cat(angles, angles) over the head dimension,
    applied with rotate_half (model/attention.py apply_rotary). No learned parameters; computed in fp32
    each forward (no buffer that .to(bfloat16) would round)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.head_dim = cfg.head_dim
        self.thetas = sorted({spec.rope_theta for spec in layer_specs(cfg)})  # global and local bases

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor], attention_mask: Optional[Tensor],
                position_ids: Optional[Tensor] = None) -> RotaryContext:
        device = input_ids.device
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=device)[None]
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device) / self.head_dim
        tables = {}
        for theta in self.thetas:
            angles = position_ids[..., None].float() * (1.0 / theta ** exponents)
            angles = torch.cat((angles, angles), dim=-1)
            tables[theta] = (angles.cos(), angles.sin())
        return RotaryContext(tables)
