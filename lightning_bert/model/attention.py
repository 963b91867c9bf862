"""Attention kinds: one registry, name -> module class. Absolute (BERT) attention lives here.

An attention kind is built once per layer (or once for shared layers) as `cls(cfg)` and called as

    attention(x, mask, context, query=None) -> [B, Lq, H]

- x [B, L, H]: keys and values (and queries when `query` is None);
- mask: bool, broadcastable to [B, 1, Lq, L], True = may attend; None = attend everywhere;
- context: what the kind's position scheme (`cls.position_scheme`, a name in model.positions.POSITIONS)
  computed once per forward for all layers, e.g. DeBERTa's relative embeddings; None for absolute;
- query [B, Lq, H]: a separate query stream (DeBERTa's enhanced mask decoder, XLNet's query stream).
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_bert.errors import UserError
from lightning_bert.model.config import EncoderConfig

ATTENTIONS: dict[str, type[nn.Module]] = {}


def register_attention(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def add(cls: type[nn.Module]) -> type[nn.Module]:
        ATTENTIONS[name] = cls
        return cls

    return add


def attention_class(name: str) -> type[nn.Module]:
    if name not in ATTENTIONS:
        raise UserError(f"model.attention={name!r} is not allowed; choose one of {', '.join(sorted(ATTENTIONS))}")
    return ATTENTIONS[name]


@register_attention("absolute")
class AbsoluteAttention(nn.Module):
    """BERT's attention through `scaled_dot_product_attention`, so PyTorch picks the fastest kernel."""

    position_scheme: ClassVar[str] = "none"

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)  # one matmul for Q, K and V
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout_p = cfg.attention_dropout

    def forward(self, x: Tensor, mask: Optional[Tensor], context: Any = None, query: Optional[Tensor] = None) -> Tensor:
        batch, length, hidden = x.shape
        dropout = self.dropout_p if self.training else 0.0
        if query is None:
            q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        else:  # queries from another stream: the same weights, split
            wq, wkv = self.qkv.weight.split([hidden, 2 * hidden])
            bq, bkv = self.qkv.bias.split([hidden, 2 * hidden])
            q = F.linear(query, wq, bq).view(batch, query.shape[1], self.num_heads, -1).transpose(1, 2)
            k, v = F.linear(x, wkv, bkv).view(batch, length, 2, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.out(y.transpose(1, 2).reshape(batch, -1, hidden))
