"""DeBERTa (He et al. 2021): disentangled attention over content and relative positions, its position
scheme, and the enhanced mask decoder (EMD).

Registered as attention kind `disentangled` (model/attention.py) with position scheme `disentangled`
(model/positions.py). Numerics follow transformers' modeling_deberta_v2 (norm_rel_ebd="layer_norm");
tests/test_deberta.py checks parity with DebertaV2Model through hf/deberta.py's weight map.

Score of query i on key j, each term optional through `pos_att_type` (s = the number of terms):

    (Q_i K_j  +  Q_i Kr_d(i,j)  +  K_j Qr_d(i,j)) / sqrt(head_dim * s)
     c2c         c2p               p2c

with d(i, j) the clamped (log-bucketed) distance i - j, shifted to a row of the shared relative table;
Kr, Qr the table through this layer's key/query projections (share_att_key) or separate ones. The
two position terms are gathered from [.., L, R] products at once (no loops) and handed to SDPA as an
additive bias, so one call does the masking, softmax, dropout and the product with V.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_bert.model.attention import Attention, register_attention
from lightning_bert.model.config import EncoderConfig, LayerSpec
from lightning_bert.model.positions import register_positions


def relative_span(cfg: EncoderConfig) -> int:
    """k: rows per side of the relative table (the bucket count, or the clamped distance)."""
    if cfg.position_buckets > 0:
        return cfg.position_buckets
    return cfg.max_relative_positions if cfg.max_relative_positions >= 1 else cfg.max_position_embeddings


def log_bucket(relative: Tensor, buckets: int, max_position: int) -> Tensor:
    """Distances below buckets/2 kept exact, larger ones log-spaced up to max_position (DeBERTa-v2
    `make_log_bucket_position`, same float32 arithmetic so the bucket edges agree exactly)."""
    sign = torch.sign(relative)
    mid = buckets // 2
    near = (relative < mid) & (relative > -mid)
    distance = torch.where(near, torch.tensor(mid - 1).type_as(relative), relative.abs())
    log_pos = torch.ceil(torch.log(distance / mid) / torch.log(torch.tensor((max_position - 1) / mid))
                         * (mid - 1)) + mid
    return torch.where(distance <= mid, relative.type_as(log_pos), log_pos * sign).long()


@dataclass
class RelativeTableContext:
    """Rows of the learned relative table and which row each (query, key) pair reads; once per forward."""

    embeddings: Tensor  # [R, H]: the LayerNorm'd rows of the relative table that these lengths can reach
    index: Tensor  # long [1 or B, Lq, L]: row of `embeddings` for (query i, key j)


@register_positions("disentangled")
class RelativePositions(nn.Module):
    """The relative embedding table (2k rows) + LayerNorm, and the (bucketed) distance index."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.span = relative_span(cfg)
        self.buckets = cfg.position_buckets
        self.max_distance = cfg.max_relative_positions if cfg.max_relative_positions >= 1 else cfg.max_position_embeddings
        self.embeddings = nn.Embedding(2 * self.span, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def rows(self, distance: Tensor) -> Tensor:
        """Distance i - j -> row of the full table."""
        if self.buckets > 0:
            distance = log_bucket(distance, self.buckets, self.max_distance)
        return (distance + self.span).clamp(0, 2 * self.span - 1)

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor] = None,
                attention_mask: Optional[Tensor] = None, position_ids: Optional[Tensor] = None) -> RelativeTableContext:
        length = input_ids.shape[1]
        return self.at(torch.arange(length, device=input_ids.device)[None], length)

    def at(self, query_positions: Tensor, key_length: int) -> RelativeTableContext:
        """The context for queries at `query_positions` [1 or B, Lq] over keys 0..key_length-1 (EMD's
        sparse decoder asks for the masked positions only)."""
        keys = torch.arange(key_length, device=query_positions.device)
        index = self.rows(query_positions[..., None] - keys)
        # Only rows for |i - j| < key_length can occur: slice the table (and LayerNorm only those), so
        # the c2p/p2c products are [.., L, <=2L-1] rather than [.., L, 2k] (k = 256 buckets, L = 128).
        lo, hi = self.rows(torch.tensor([1 - key_length, key_length - 1])).tolist()
        table = self.norm(self.embeddings.weight[lo: hi + 1])
        return RelativeTableContext(table, index - lo)


@register_attention("disentangled")
class DisentangledAttention(Attention):
    """c2c + c2p + p2c attention; see the module docstring. Names map to DebertaV2 in hf/deberta.py."""

    def __init__(self, cfg: EncoderConfig, spec: LayerSpec):
        super().__init__()
        hidden = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.terms = tuple(cfg.pos_att_type)
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)
        self.share_att_key = cfg.share_att_key
        if not cfg.share_att_key:  # separate projections of the relative table (DeBERTa v1/v2)
            self.pos_key = nn.Linear(hidden, hidden) if "c2p" in self.terms else None
            self.pos_query = nn.Linear(hidden, hidden) if "p2c" in self.terms else None
        self.scale = 1.0 / math.sqrt(cfg.head_dim * (1 + len(self.terms)))
        self.position_dropout = nn.Dropout(cfg.dropout)  # on the shared table, per layer, as DeBERTa does
        self.dropout_p = cfg.attention_dropout

    def _heads(self, x: Tensor) -> Tensor:
        """[..., L, H] -> [..., heads, L, d]."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(-3, -2)

    def forward(self, x: Tensor, mask: Optional[Tensor], context: Any = None, query: Optional[Tensor] = None) -> Tensor:
        batch, length, hidden = x.shape
        q = self._heads(self.query(x if query is None else query))  # [B, h, Lq, d]
        k, v = self._heads(self.key(x)), self._heads(self.value(x))
        bias = self.position_bias(q, k, context) if self.terms else None
        if mask is not None:  # bool, True = attend
            bias = mask if bias is None else bias.masked_fill(~mask, torch.finfo(bias.dtype).min)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale,
                                           dropout_p=self.dropout_p if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(batch, -1, hidden))

    def position_bias(self, q: Tensor, k: Tensor, context: RelativeTableContext) -> Tensor:
        """(c2p + p2c) * scale, [B, h, Lq, L] (a transposed view of a [h, B, Lq, L] tensor).

        The products run per head over all B * L rows at once ([h, B*L, d] x [h, d, R]): broadcasting
        the [h, R, d] position projections against [B, h, L, d] would copy them B times (and sum B
        gradients back), which is what transformers' `.repeat` does."""
        table = self.position_dropout(context.embeddings)
        batch, heads, queries, dim = q.shape
        keys = k.shape[2]
        index = context.index[None]  # [1, 1|B, Lq, L]
        bias = None
        if "c2p" in self.terms:
            pos_key = self._heads(self.key(table) if self.share_att_key else self.pos_key(table)) * self.scale
            c2p = torch.matmul(q.transpose(0, 1).reshape(heads, -1, dim), pos_key.transpose(-1, -2))
            c2p = c2p.view(heads, batch, queries, -1)  # [h, B, Lq, R]
            bias = torch.gather(c2p, -1, index.expand(heads, batch, queries, keys))
        if "p2c" in self.terms:
            pos_query = self._heads(self.query(table) if self.share_att_key else self.pos_query(table)) * self.scale
            p2c = torch.matmul(k.transpose(0, 1).reshape(heads, -1, dim), pos_query.transpose(-1, -2))
            p2c = p2c.view(heads, batch, keys, -1)  # [h, B, L, R]: key j against row d(i, j)
            p2c = torch.gather(p2c, -1, index.transpose(-1, -2).expand(heads, batch, keys, queries)).transpose(-1, -2)
            bias = p2c if bias is None else bias + p2c
        return bias.transpose(0, 1).to(q.dtype)


class EnhancedMaskDecoder(nn.Module):
    """DeBERTa's EMD (paper section 3.2; microsoft/DeBERTa EnhancedMaskDecoder): absolute positions
    enter just before the MLM head. Queries = absolute position embeddings + h_{N-1} (the encoder's
    second-to-last output); keys/values = h_{N-1}; the encoder's last layer runs `steps` times with
    its own weights, each pass updating the queries. Only the masked rows are decoded.

    It owns its absolute position table (hidden-sized, added to the hidden states), so it works
    whether or not the encoder adds positions at its input (model.position_biased_input); microsoft/DeBERTa
    skips the decoder when the input has positions, here it always runs (an ablation switch, not a preset).
    The encoder is referenced, not registered: its weights stay under `encoder.*` in the state dict.
    """

    def __init__(self, encoder: nn.Module, steps: int = 2):
        super().__init__()
        cfg: EncoderConfig = encoder.config
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        nn.init.normal_(self.position_embeddings.weight, std=0.02)
        self.steps = steps
        self._encoder = (encoder,)  # a tuple hides it from nn.Module registration

    def forward(self, layers: list[Tensor], selected: Tensor, input_ids: Tensor,
                token_type_ids: Optional[Tensor] = None, attention_mask: Optional[Tensor] = None,
                position_ids: Optional[Tensor] = None, document_ids: Optional[Tensor] = None) -> Tensor:
        """layers: [embeddings, layer 1, ..., layer N] from the encoder; selected [B, L] bool -> the
        decoder's outputs at the selected rows [N, H], in the order of hidden[selected]."""
        encoder = self._encoder[0]
        states = layers[-2]
        batch, length, hidden = states.shape
        mask = encoder.layer_masks(input_ids, attention_mask, document_ids)[-1]  # the last layer's, which runs again
        context = encoder.positions(input_ids, token_type_ids, attention_mask, position_ids)
        sparse = context is None or isinstance(encoder.positions, RelativePositions)
        if sparse:  # queries at the selected positions only, padded to the row with the most
            counts = selected.sum(1)
            width = int(counts.max()) if batch else 0
            if width == 0:
                return states.new_zeros(0, hidden)
            positions = torch.sort((~selected).to(torch.uint8), dim=1, stable=True).indices[:, :width]  # [B, M]
            query = states.gather(1, positions[..., None].expand(batch, width, hidden))
            if context is not None:
                context = encoder.positions.at(positions, length)
        else:  # a scheme without per-query contexts: decode every position, keep the selected ones
            positions = torch.arange(length, device=states.device)[None]
            query = states
        if position_ids is not None:  # packed documents: each row's position within its document
            positions = position_ids.gather(1, positions.expand(batch, -1))
        query = query + self.position_embeddings(positions)
        last = encoder.layers[-1]
        for _ in range(self.steps):
            query = last(states, mask, context, query)
        query = encoder.final_norm(query)
        if sparse:
            return query[torch.arange(width, device=query.device) < counts[:, None]]
        return query[selected]
