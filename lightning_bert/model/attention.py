"""Attention kinds: one registry, name -> module class; the padding mask; absolute (BERT) attention.

An attention kind subclasses `Attention`, is built once per layer (or once for shared layers) as
`cls(cfg, spec)` with the layer's `LayerSpec` (model/config.py), and is called as

    attention(x, mask, context, query=None) -> [B, Lq, H]

- x [B, L, H]: keys and values (and queries when `query` is None);
- mask: bool, broadcastable to [B, 1, Lq, L], True = may attend; None = attend everywhere; built once
  per forward per distinct layer kind by `build_mask(spec, tokens)` from the batch's TokenLayout
  (padding, packed documents) and the layer's spec (a local window);
- context: what the position scheme (model.positions, one of `cls.position_schemes`, declared in
  config.ATTENTION_KINDS) computed once per forward for all layers, e.g. DeBERTa's relative
  embeddings; None for absolute;
- query [B, Lq, H]: a separate query stream (DeBERTa's enhanced mask decoder, XLNet's query stream).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_bert.config import ATTENTION_KINDS
from lightning_bert.model.config import EncoderConfig, LayerSpec
from lightning_bert.model.registry import Registry

ATTENTIONS = Registry("model.attention")


@dataclass(frozen=True)
class TokenLayout:
    """What the batch says about which tokens may meet: what a layer kind's mask is built from."""

    length: int
    device: torch.device
    attention_mask: Optional[Tensor] = None  # [B, L], 1 = token; None = nothing padded
    document_ids: Optional[Tensor] = None  # [B, L] packed document of each token (-1 = padding); None = one per row


class Attention(nn.Module):
    """Base of the attention kinds: the declared position schemes and the mask builder."""

    position_schemes: ClassVar[tuple[str, ...]]  # set by register_attention from config.ATTENTION_KINDS

    @classmethod
    def build_mask(cls, spec: LayerSpec, tokens: TokenLayout) -> Optional[Tensor]:
        """The mask for layers of `spec`'s kind, built once per forward for all of them: padding, and
        where asked the same packed document and the layer's window. None when every token may attend
        everywhere (SDPA's fastest kernel)."""
        padding = padding_mask(tokens.attention_mask)
        if spec.window is None and tokens.document_ids is None:
            return padding
        allowed = structure_mask(tokens, spec.window)
        if padding is None:
            return allowed
        # A padding query row may see every real token: an all-False row would make softmax NaN (its output
        # is never read, but NaN * 0 in the backward pass is still NaN).
        return padding & (allowed | ~padding.transpose(-1, -2))


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


def structure_mask(tokens: TokenLayout, window: Optional[int]) -> Tensor:
    """bool [1 or B, 1, L, L]: key j within query i's window (|i - j| <= window // 2, ModernBERT's
    local_attention) and in the same packed document. Every real token sees itself, so no real row is empty."""
    allowed = None
    if window is not None:
        index = torch.arange(tokens.length, device=tokens.device)
        allowed = ((index[:, None] - index[None, :]).abs() <= window // 2)[None, None]
    if tokens.document_ids is not None:
        documents = tokens.document_ids
        same = (documents[:, None, :, None] == documents[:, None, None, :])
        allowed = same if allowed is None else allowed & same
    return allowed


def rotate_half(x: Tensor) -> Tensor:
    """[x1, x2] -> [-x2, x1] over the last dimension's halves (transformers' ModernBERT/Llama convention)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [B, h, L, d] rotated by cos/sin [1 or B, L, d], in fp32 (angles up to 1e5 radians lose their
    phase in bf16) and cast back."""
    x32 = x.float()
    return (x32 * cos[:, None] + rotate_half(x32) * sin[:, None]).to(x.dtype)


@register_attention("absolute")
class AbsoluteAttention(Attention):
    """BERT's attention through `scaled_dot_product_attention`, so PyTorch picks the fastest kernel.
    Under model.positions=rope, q and k are rotated by this layer's RoPE base (its spec's rope_theta)
    from the context (model/positions.py RotaryContext)."""

    def __init__(self, cfg: EncoderConfig, spec: LayerSpec):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size, bias=cfg.attention_bias)  # Q, K and V at once
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=cfg.attention_bias)
        self.dropout_p = cfg.attention_dropout
        self.rope_theta = spec.rope_theta

    def forward(self, x: Tensor, mask: Optional[Tensor], context: Any = None, query: Optional[Tensor] = None) -> Tensor:
        batch, length, hidden = x.shape
        dropout = self.dropout_p if self.training else 0.0
        if query is None:
            q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        else:  # queries from another stream: the same weights, split
            wq, wkv = self.qkv.weight.split([hidden, 2 * hidden])
            bq, bkv = self.qkv.bias.split([hidden, 2 * hidden]) if self.qkv.bias is not None else (None, None)
            q = F.linear(query, wq, bq).view(batch, query.shape[1], self.num_heads, -1).transpose(1, 2)
            k, v = F.linear(x, wkv, bkv).view(batch, length, 2, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        if self.rope_theta is not None:  # query rows sit at the keys' positions (EMD decodes every row)
            cos, sin = context.tables[self.rope_theta]
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.out(y.transpose(1, 2).reshape(batch, -1, hidden))
