"""The shared BERT-family encoder: a plain nn.Module, no Lightning and no objectives inside.

Options cover BERT (post-LN), pre-LN, and ALBERT (factorised embeddings, cross-layer sharing).
Attention runs through `scaled_dot_product_attention`, so PyTorch picks the fastest kernel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class EncoderConfig:
    vocab_size: int
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 512
    embedding_size: Optional[int] = None  # None = hidden_size; smaller = ALBERT factorisation
    share_layers: str = "none"  # none | all | attention | ffn
    norm: str = "post"  # post | pre
    dropout: float = 0.1
    attention_dropout: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    pad_token_id: int = 0
    layer_norm_eps: float = 1e-12

    @property
    def embedding_dim(self) -> int:
        return self.embedding_size or self.hidden_size


class Embeddings(nn.Module):
    """Token + position + segment embeddings, LayerNorm, dropout; projected up when factorised."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        dim = cfg.embedding_dim
        self.word_embeddings = nn.Embedding(cfg.vocab_size, dim, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, dim)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, dim)
        self.norm = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.projection = nn.Linear(dim, cfg.hidden_size) if dim != cfg.hidden_size else nn.Identity()

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor]) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        if token_type_ids is not None:
            x = x + self.token_type_embeddings(token_type_ids)
        else:  # segment 0 everywhere, without materialising a tensor of zeros
            x = x + self.token_type_embeddings.weight[0]
        return self.projection(self.dropout(self.norm(x)))


class SelfAttention(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)  # one matmul for Q, K and V
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout_p = cfg.attention_dropout

    def forward(self, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        batch, length, hidden = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(batch, length, hidden))


class FeedForward(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.up = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.down = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    """One transformer layer; attention and FFN may be shared with other blocks (ALBERT)."""

    def __init__(self, cfg: EncoderConfig, attention: SelfAttention, ffn: FeedForward):
        super().__init__()
        self.attention, self.ffn, self.pre_norm = attention, ffn, cfg.norm == "pre"
        self.attention_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        if self.pre_norm:
            x = x + self.dropout(self.attention(self.attention_norm(x), mask))
            return x + self.dropout(self.ffn(self.ffn_norm(x)))
        x = self.attention_norm(x + self.dropout(self.attention(x, mask)))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


def build_blocks(cfg: EncoderConfig) -> nn.ModuleList:
    """ALBERT sharing: `all` reuses one block; `attention`/`ffn` reuse only that sublayer."""
    if cfg.share_layers == "all":
        block = Block(cfg, SelfAttention(cfg), FeedForward(cfg))
        return nn.ModuleList([block] * cfg.num_layers)
    attention = SelfAttention(cfg) if cfg.share_layers == "attention" else None
    ffn = FeedForward(cfg) if cfg.share_layers == "ffn" else None
    return nn.ModuleList(Block(cfg, attention or SelfAttention(cfg), ffn or FeedForward(cfg))
                         for _ in range(cfg.num_layers))


class BertEncoder(nn.Module):
    """input ids [B, L] (+ segment ids, + attention mask with 1 = token) -> hidden states [B, L, H]."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.layers = build_blocks(cfg)
        self.final_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) if cfg.norm == "pre" else nn.Identity()
        self.apply(init_weights)

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor] = None,
                attention_mask: Optional[Tensor] = None) -> Tensor:
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):  # no mask = fastest kernel
            mask = attention_mask[:, None, None, :].bool()
        x = self.embeddings(input_ids, token_type_ids)
        for layer in self.layers:
            x = layer(x, mask)
        return self.final_norm(x)


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
