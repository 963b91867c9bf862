"""The encoder's config (the schema's ModelConfig, resolved) and the per-layer specs it is built from."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lightning_bert.config import ModelConfig


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
    """What layer `index` is built from. Every field but `index` says what kind of layer it is (a
    per-layer window or RoPE base goes here); layers of one kind share one attention mask per forward."""

    index: int
    attention: str  # a name in model/attention.py ATTENTIONS

    @property
    def kind(self) -> tuple:
        return dataclasses.astuple(self)[1:]


def layer_specs(cfg: EncoderConfig) -> tuple[LayerSpec, ...]:
    """One spec per layer, resolved from the config (today every layer has the config's attention kind)."""
    return tuple(LayerSpec(index=i, attention=cfg.attention) for i in range(cfg.num_layers))
