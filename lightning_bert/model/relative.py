"""Transformer-XL / XLNet relative attention (bidirectional, no memory) and its position scheme.

score(i, j) = [(q_i + r_w)·k_j  +  (q_i + r_r)·R(p_i - j)  +  (q_i + r_s)·s(seg_i != seg_j)] / sqrt(d)

R(d) = W_r [sin(d f), cos(d f)] is a fixed sinusoid of the signed distance, projected per layer; s is a
learned 2-row segment table (same segment or not). p_i is query row i's position: i itself for the content
stream, a target's position for XLNet's query stream (carried in the context, see `with_queries`).
The position and segment terms go in as an additive mask, so scaled_dot_product_attention still picks
its fastest kernel. Numerics and weight layout follow transformers' XLNetRelativeAttention (hf/xlnet.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_bert.model.attention import Attention, register_attention
from lightning_bert.model.config import EncoderConfig, LayerSpec
from lightning_bert.model.positions import register_positions


@dataclass
class SinusoidContext:
    """Sinusoids of every distance, each (query row, key)'s row of them, and the segments; once per forward."""

    pos_emb: Tensor  # [2L, H] sinusoids of the distances L, L-1, ..., -L+1 (row m holds distance L - m)
    rel_index: Tensor  # [L, L] or [B, Lq, L]: row of pos_emb for (query row i, key j) = L - p_i + j
    other_segment: Optional[Tensor]  # bool [B, Lq, L]: key j is in another segment than query row i; None: one segment
    segment: Optional[Tensor]  # [B, L] segment ids of the keys (to build query rows' segments)

    def with_queries(self, positions: Tensor) -> "SinusoidContext":
        """The context for query rows at `positions` [B, Lq] (e.g. XLNet's targets): same keys and sinusoids."""
        length = self.pos_emb.shape[0] // 2
        keys = torch.arange(length, device=positions.device)
        rel_index = length - positions[:, :, None] + keys
        other = None
        if self.segment is not None:
            other = self.segment.gather(1, positions)[:, :, None] != self.segment[:, None, :]
        return replace(self, rel_index=rel_index, other_segment=other)


@register_positions("sinusoidal_relative")
class SinusoidalRelativePositions(nn.Module):
    """Transformer-XL's fixed sinusoids of relative distances (XLNet attn_type="bi", no clamp, no bi_data)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.hidden_size = cfg.hidden_size
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor], attention_mask: Optional[Tensor],
                position_ids: Optional[Tensor] = None) -> SinusoidContext:
        length = input_ids.shape[1]
        # fp32 whatever the model's dtype (no buffer that .to(bfloat16) would round): distances reach 4096
        inv_freq = 1.0 / 10000 ** (torch.arange(0, self.hidden_size, 2.0, device=input_ids.device) / self.hidden_size)
        distance = torch.arange(length, -length, -1.0, device=input_ids.device)
        angles = distance[:, None] * inv_freq
        pos_emb = self.dropout(torch.cat([angles.sin(), angles.cos()], dim=-1))
        rows = torch.arange(length, device=input_ids.device)
        rel_index = length - rows[:, None] + rows
        other = None if token_type_ids is None else token_type_ids[:, :, None] != token_type_ids[:, None, :]
        return SinusoidContext(pos_emb, rel_index, other, token_type_ids)


@register_attention("relative")
class RelativeAttention(Attention):
    """XLNet's relative attention: no biases on the projections, r_w/r_r/r_s biases per head, segment table."""

    def __init__(self, cfg: EncoderConfig, spec: LayerSpec):
        super().__init__()
        self.num_heads, hidden = cfg.num_heads, cfg.hidden_size
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.r = nn.Linear(hidden, hidden, bias=False)  # projects the sinusoids, per layer
        self.out = nn.Linear(hidden, hidden, bias=False)
        heads, head_dim = cfg.num_heads, cfg.head_dim
        self.r_w_bias = nn.Parameter(torch.randn(heads, 1, head_dim) * 0.02)  # content bias (u)
        self.r_r_bias = nn.Parameter(torch.randn(heads, 1, head_dim) * 0.02)  # position bias (v)
        self.r_s_bias = nn.Parameter(torch.randn(heads, 1, head_dim) * 0.02)  # segment bias
        self.seg_embed = nn.Parameter(torch.randn(heads, head_dim, 2) * 0.02)  # [:, :, 0] same, 1 other segment
        self.dropout_p = cfg.attention_dropout

    def forward(self, x: Tensor, mask: Optional[Tensor], context: Any = None, query: Optional[Tensor] = None) -> Tensor:
        batch, length, hidden = x.shape
        heads = self.num_heads
        if query is None:
            q, k, v = self.qkv(x).view(batch, length, 3, heads, -1).permute(2, 0, 3, 1, 4)
        else:  # queries from another stream (XLNet's g), keys and values from x (the content stream h)
            wq, wkv = self.qkv.weight.split([hidden, 2 * hidden])
            q = F.linear(query, wq).view(batch, query.shape[1], heads, -1).transpose(1, 2)
            k, v = F.linear(x, wkv).view(batch, length, 2, heads, -1).permute(2, 0, 3, 1, 4)
        rows = q.shape[2]
        r = self.r(context.pos_emb.to(self.r.weight.dtype)).view(2 * length, heads, -1).permute(1, 2, 0)  # [n, d, 2L]
        position = torch.matmul(q + self.r_r_bias, r.to(q.dtype))  # [B, n, Lq, 2L]: every distance
        index = context.rel_index
        index = index[None, None] if index.dim() == 2 else index[:, None]
        position = position.gather(-1, index.expand(batch, heads, rows, length))
        segment = torch.matmul(q + self.r_s_bias, self.seg_embed.to(q.dtype))  # [B, n, Lq, 2]
        if context.other_segment is None:
            position = position + segment[..., :1]
        else:
            position = position + torch.where(context.other_segment[:, None], segment[..., 1:], segment[..., :1])
        bias = position * (1.0 / math.sqrt(q.shape[-1]))
        if mask is not None:
            bias = bias.masked_fill(~mask, float("-inf"))
        y = F.scaled_dot_product_attention((q + self.r_w_bias).to(k.dtype), k, v, attn_mask=bias.to(k.dtype),
                                           dropout_p=self.dropout_p if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(batch, rows, hidden))


def target_positions(order: Tensor) -> tuple[Tensor, Tensor]:
    """(positions [B, P] of each row's targets, padded with 0; valid [B, P]) from plm_order (> 0 = target)."""
    is_target = order > 0
    counts = is_target.sum(1)
    width = int(counts.max()) if len(counts) else 0
    positions = torch.argsort((~is_target).to(torch.int8), dim=1, stable=True)[:, :width]
    valid = torch.arange(width, device=order.device) < counts[:, None]
    return positions.masked_fill(~valid, 0), valid


def permutation_mask(order: Tensor, positions: Tensor, valid: Tensor,
                     attention_mask: Optional[Tensor] = None) -> Tensor:
    """bool [B, 1, L + P, L], True = may attend: L content rows, then P query rows (one per target).

    Content row i sees key j when order[j] <= order[i] (itself, the context, earlier targets); query row t
    when order[j] < order[t] (never its own content, nor a target at or after it). Context tokens (order 0,
    special tokens included) see no target, so nothing a query sees carries a later target's content.
    """
    rank = order.clamp(min=0)
    target_rank = rank.gather(1, positions).masked_fill(~valid, 1)  # a padded target row sees the context only
    visible = order >= 0
    if attention_mask is not None:
        visible = visible & attention_mask.bool()
    content = order[:, None, :] <= rank[:, :, None]
    query = order[:, None, :] < target_rank[:, :, None]
    return (torch.cat([content, query], dim=1) & visible[:, None, :])[:, None]


def two_stream(encoder: nn.Module, input_ids: Tensor, token_type_ids: Optional[Tensor],
               attention_mask: Optional[Tensor], order: Tensor, mask_emb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """XLNet's two-stream forward over a relative-attention BertEncoder's own layers and weights.

    The content stream h starts from the token embeddings (no [MASK] in the input); the query stream g
    from `mask_emb`, only at the targets (P rows, not L). Each layer updates both in one attention call:
    queries [h; g], keys and values from h, with the rows' positions in the context. Returns (g after
    the last layer [B, P, H], target positions [B, P], valid [B, P]).
    """
    positions, valid = target_positions(order)
    batch, length = input_ids.shape
    mask = permutation_mask(order, positions, valid, attention_mask)
    rows = torch.cat([torch.arange(length, device=input_ids.device).expand(batch, length), positions], dim=1)
    context = encoder.positions(input_ids, token_type_ids, attention_mask).with_queries(rows)
    h = encoder.embeddings(input_ids, token_type_ids)
    g = F.dropout(mask_emb.to(h.dtype).expand(batch, positions.shape[1], -1), encoder.config.dropout,
                  encoder.training)
    stream = torch.cat([h, g], dim=1)
    for layer in encoder.layers:
        stream = layer(stream[:, :length], mask, context, stream)
    return encoder.final_norm(stream[:, length:]), positions, valid
