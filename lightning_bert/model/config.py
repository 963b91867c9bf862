"""The encoder's config (the schema's ModelConfig, resolved) and the per-layer specs it is built from."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from lightning_bert.config import POSITION_SCHEMES, ModelConfig


@dataclass(kw_only=True)
class EncoderConfig(ModelConfig):
    """ModelConfig's fields (declared, commented and range-checked there, once) resolved by
    `__post_init__`: sizes from the size preset, the position scheme, position_biased_input; plus the
    facts the tokenizer and data decide. checkpoint.encoder_config builds one from a run config; tests,
    benchmarks and hf/ build them directly, so only kind names are checked again here."""

    vocab_size: int
    type_vocab_size: int = 2  # segment ids
    pad_token_id: int = 0
    layer_norm_eps: float = 1e-12

    def __post_init__(self) -> None:
        self.check_kinds()
        self.check_modern()
        self.position_biased_input = self.biased_input()
        self.positions = self.position_scheme()
        self.num_layers, self.hidden_size, self.num_heads, self.intermediate_size = self.dims()
        self.position_buckets = self.position_buckets or 0  # 0 = exact distances
        self.pos_att_type = tuple(self.pos_att_type)

    @property
    def embedding_dim(self) -> int:
        return self.embedding_size or self.hidden_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True)
class LayerSpec:
    """What layer `index` is built from. Every field but `index` says what kind of layer it is; layers
    of one kind share one attention mask per forward."""

    index: int
    attention: str  # a name in model/attention.py ATTENTIONS
    window: Optional[int] = None  # local layer: attends to |i - j| <= window // 2; None = global
    rope_theta: Optional[float] = None  # RoPE base of this layer; None = not rotary

    @property
    def kind(self) -> tuple:
        return dataclasses.astuple(self)[1:]


def layer_specs(cfg: EncoderConfig) -> tuple[LayerSpec, ...]:
    """One spec per layer, resolved from the config: the attention kind, and under model.local_window
    ModernBERT's alternation (layer i global when i % global_every == 0, else windowed with the local RoPE base)."""
    rotary = POSITION_SCHEMES[cfg.positions].rotary

    def spec(i: int) -> LayerSpec:
        local = cfg.is_local(i)
        theta = (cfg.local_theta() if local else cfg.rope_theta) if rotary else None
        return LayerSpec(index=i, attention=cfg.attention, window=cfg.local_window if local else None, rope_theta=theta)

    return tuple(spec(i) for i in range(cfg.num_layers))
