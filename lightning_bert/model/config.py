"""The encoder's own config: plain values, imported by the encoder and by every attention kind."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


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
    attention: str = "absolute"  # a name in model.attention.ATTENTIONS
    position_biased_input: bool = True  # absolute position embeddings added at the input (off: DeBERTa-v3, XLNet)
    # DeBERTa (model/disentangled.py)
    max_relative_positions: int = -1  # relative distance table span k (-1 = max_position_embeddings)
    position_buckets: int = 0  # log-bucketed relative positions (0 = exact distances)
    share_att_key: bool = True  # reuse the content Q/K projections for positions (v3) or separate ones
    pos_att_type: tuple[str, ...] = ("c2p", "p2c")  # disentangled terms besides content-to-content

    @property
    def embedding_dim(self) -> int:
        return self.embedding_size or self.hidden_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads
