"""Norm and feed-forward kinds: one registry each, name -> module class, like model/attention.py.

A norm kind is built as `cls(dim, cfg)`, a feed-forward kind as `cls(cfg)` ([.., H] -> [.., H]). A new
kind is one decorated class here plus `model.norm=NAME` / `model.ffn=NAME`. Initialisation
(model/encoder.py init_weights): Linear and Embedding children get BERT's N(0, 0.02); then a kind's own
`reset_parameters`, if it has one, runs (children first), so a kind owns its init.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_bert.model.config import EncoderConfig
from lightning_bert.model.registry import Registry

NORMS = Registry("model.norm")
FEED_FORWARDS = Registry("model.ffn")
register_norm = NORMS.register
register_ffn = FEED_FORWARDS.register


@register_norm("layernorm")
class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm (weight, bias unless model.norm_bias=false) with the config's epsilon;
    reset_parameters: unit weight, zero bias."""

    def __init__(self, dim: int, cfg: EncoderConfig):
        super().__init__(dim, eps=cfg.layer_norm_eps, bias=cfg.norm_bias)


@register_norm("rmsnorm")
class RMSNorm(nn.RMSNorm):
    """nn.RMSNorm (Zhang & Sennrich 2019; NeoBERT): x / rms(x) * weight, no centring and no bias."""

    def __init__(self, dim: int, cfg: EncoderConfig):
        super().__init__(dim, eps=cfg.layer_norm_eps)


@register_ffn("gelu")
class GeluFeedForward(nn.Module):
    """BERT's MLP: up to intermediate_size, GELU, back down."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.up = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.gelu(self.up(x)))


class GatedFeedForward(nn.Module):
    """A GLU (Shazeer 2020): `up` projects to 2 x width, chunked into (input, gate); act(input) * gate, down.
    The layout of transformers' ModernBertMLP (Wi, Wo) and NeoBERT's SwiGLU (w12, w3). No dropout inside:
    the block's dropout after the FFN is BERT's, as for `gelu` (ModernBERT's mlp_dropout is 0)."""

    activation = staticmethod(F.gelu)

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        width = cfg.ffn_width()  # model.intermediate_size, times 2/3 for SwiGLU (config.GATED_FFNS)
        self.up = nn.Linear(cfg.hidden_size, 2 * width, bias=cfg.mlp_bias)
        self.down = nn.Linear(width, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.up(x).chunk(2, dim=-1)
        return self.down(self.activation(value) * gate)


@register_ffn("geglu")
class GeGLUFeedForward(GatedFeedForward):
    """ModernBERT's GeGLU: GELU on the input half, full intermediate width."""


@register_ffn("swiglu")
class SwiGLUFeedForward(GatedFeedForward):
    """NeoBERT's SwiGLU: SiLU on the input half, width 2/3 of intermediate_size (GELU's parameter count)."""

    activation = staticmethod(F.silu)


def owns_init(module: nn.Module) -> bool:
    """A registered norm or feed-forward kind (its reset_parameters is its init)."""
    return isinstance(module, tuple(NORMS.values()) + tuple(FEED_FORWARDS.values()))
