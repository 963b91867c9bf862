"""Attention kinds: one registry, name -> module class; the padding mask; absolute (BERT) attention.

An attention kind subclasses `Attention`, is built once per layer (or once for shared layers) as
`cls(cfg, spec)` with the layer's `LayerSpec` (model/config.py), and is called as

    attention(x, mask, context, query=None) -> [B, Lq, H]

- x [B, L, H]: keys and values (and queries when `query` is None);
- mask: bool, broadcastable to [B, 1, Lq, L], True = may attend; None = attend everywhere;
- context: what the position scheme (model.positions, one of `cls.position_schemes`, declared in
  config.ATTENTION_KINDS) computed once per forward for all layers, e.g. DeBERTa's relative
  embeddings; None for absolute;
- query [B, Lq, H]: a separate query stream (DeBERTa's enhanced mask decoder, XLNet's query stream).
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_bert.config import ATTENTION_KINDS
from lightning_bert.model.config import EncoderConfig, LayerSpec
from lightning_bert.model.registry import Registry

ATTENTIONS = Registry("model.attention")


class Attention(nn.Module):
    """Base of the attention kinds: the declared position schemes and the mask builder."""

    position_schemes: ClassVar[tuple[str, ...]]  # set by register_attention from config.ATTENTION_KINDS

    @classmethod
    def build_mask(cls, spec: LayerSpec, attention_mask: Optional[Tensor]) -> Optional[Tensor]:
        """The mask for layers of `spec`'s kind, built once per forward for all of them: padding only here."""
        return padding_mask(attention_mask)


def register_attention(name: str) -> Callable[[type[Attention]], type[Attention]]:
    """Register an attention kind under `name`, which config.ATTENTION_KINDS declares with its schemes."""
    if name not in ATTENTION_KINDS:
        raise KeyError(f"attention kind {name!r} is not declared in lightning_bert/config.py ATTENTION_KINDS")

    def add(cls: type[Attention]) -> type[Attention]:
        cls.position_schemes = ATTENTION_KINDS[name]
        return ATTENTIONS.register(name)(cls)

    return add


def padding_mask(attention_mask: Optional[Tensor]) -> Optional[Tensor]:
    """[B, L] with 1 = token -> bool [B, 1, 1, L] for attention; None when nothing is padded (fastest kernel)."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask[:, None, None, :].bool()


@register_attention("absolute")
class AbsoluteAttention(Attention):
    """BERT's attention through `scaled_dot_product_attention`, so PyTorch picks the fastest kernel."""

    def __init__(self, cfg: EncoderConfig, spec: LayerSpec):
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
