"""The shared BERT-family encoder: a plain nn.Module, no Lightning and no objectives inside.

Options cover BERT (post-LN), pre-LN, ALBERT (factorised embeddings, cross-layer sharing), and the
attention kind by name (model/attention.py registry: absolute, DeBERTa's disentangled, ...), each with
its position scheme (model/positions.py registry), computed once per forward and shared by all layers.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_bert.model import disentangled, relative  # noqa: F401 - register their attention kinds
from lightning_bert.model.attention import attention_class
from lightning_bert.model.config import EncoderConfig
from lightning_bert.model.positions import POSITIONS

__all__ = ["BertEncoder", "EncoderConfig", "init_weights"]


class Embeddings(nn.Module):
    """Token + position + segment embeddings, LayerNorm, dropout; projected up when factorised."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        dim = cfg.embedding_dim
        self.word_embeddings = nn.Embedding(cfg.vocab_size, dim, padding_idx=cfg.pad_token_id)
        # DeBERTa-v3 and XLNet bring positions in through attention only
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, dim) if cfg.position_biased_input else None
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, dim)
        self.norm = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.projection = nn.Linear(dim, cfg.hidden_size) if dim != cfg.hidden_size else nn.Identity()

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor]) -> Tensor:
        x = self.word_embeddings(input_ids)
        if self.position_embeddings is not None:
            x = x + self.position_embeddings.weight[: input_ids.shape[1]]
        if token_type_ids is not None:
            x = x + self.token_type_embeddings(token_type_ids)
        else:  # segment 0 everywhere, without materialising a tensor of zeros
            x = x + self.token_type_embeddings.weight[0]
        return self.projection(self.dropout(self.norm(x)))


class FeedForward(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.up = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.down = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    """One transformer layer; attention and FFN may be shared with other blocks (ALBERT)."""

    def __init__(self, cfg: EncoderConfig, attention: nn.Module, ffn: FeedForward):
        super().__init__()
        self.attention, self.ffn, self.pre_norm = attention, ffn, cfg.norm == "pre"
        self.attention_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, mask: Optional[Tensor], context: Any = None,
                query: Optional[Tensor] = None) -> Tensor:
        """x: keys/values (and queries); with `query`, that stream is attended from and updated."""
        residual = x if query is None else query
        if self.pre_norm:
            q = None if query is None else self.attention_norm(query)
            y = residual + self.dropout(self.attention(self.attention_norm(x), mask, context, q))
            return y + self.dropout(self.ffn(self.ffn_norm(y)))
        y = self.attention_norm(residual + self.dropout(self.attention(x, mask, context, query)))
        return self.ffn_norm(y + self.dropout(self.ffn(y)))


def build_blocks(cfg: EncoderConfig) -> nn.ModuleList:
    """ALBERT sharing: `all` reuses one block; `attention`/`ffn` reuse only that sublayer."""
    attention_kind = attention_class(cfg.attention)
    if cfg.share_layers == "all":
        block = Block(cfg, attention_kind(cfg), FeedForward(cfg))
        return nn.ModuleList([block] * cfg.num_layers)
    attention = attention_kind(cfg) if cfg.share_layers == "attention" else None
    ffn = FeedForward(cfg) if cfg.share_layers == "ffn" else None
    return nn.ModuleList(Block(cfg, attention or attention_kind(cfg), ffn or FeedForward(cfg))
                         for _ in range(cfg.num_layers))


class BertEncoder(nn.Module):
    """input ids [B, L] (+ segment ids, + attention mask with 1 = token) -> hidden states [B, L, H]."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.layers = build_blocks(cfg)
        self.positions = POSITIONS[attention_class(cfg.attention).position_scheme](cfg)  # shared by all layers
        self.final_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) if cfg.norm == "pre" else nn.Identity()
        self.apply(init_weights)

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor] = None,
                attention_mask: Optional[Tensor] = None, output_layers: bool = False) -> Tensor | list[Tensor]:
        """Last hidden states [B, L, H]; with output_layers, [embeddings, layer 1, ..., layer N]
        (the last one final-normed), for objectives that re-run layers (DeBERTa's EMD)."""
        mask = padding_mask(attention_mask)
        context = self.positions(input_ids, token_type_ids, attention_mask)
        x = self.embeddings(input_ids, token_type_ids)
        layers = [x]
        for layer in self.layers:
            x = layer(x, mask, context)
            layers.append(x)
        layers[-1] = self.final_norm(x)
        return layers if output_layers else layers[-1]


def padding_mask(attention_mask: Optional[Tensor]) -> Optional[Tensor]:
    """[B, L] with 1 = token -> bool [B, 1, 1, L] for attention; None when nothing is padded (fastest kernel)."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask[:, None, None, :].bool()


def init_weights(module: nn.Module) -> None:
    """BERT's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
