"""The shared BERT-family encoder: a plain nn.Module, no Lightning and no objectives inside.

Options cover BERT (post-norm), pre-norm, ALBERT (factorised embeddings, cross-layer sharing),
ModernBERT/NeoBERT (no segment table, no attention norm on layer 0, local/global layers). Layer i
is built from its LayerSpec (model/config.py layer_specs); each kind comes from its registry by name:
attention (model/attention.py), position scheme (model/positions.py; its context is computed once per
forward and shared by all layers), norm and feed-forward (model/layers.py).
"""
from __future__ import annotations

from typing import Any, Optional

from torch import Tensor, nn

from lightning_bert.model.attention import ATTENTIONS, TokenLayout
from lightning_bert.model.config import EncoderConfig, LayerSpec, layer_specs
from lightning_bert.model.layers import FEED_FORWARDS, NORMS, owns_init
from lightning_bert.model.positions import POSITIONS

__all__ = ["BertEncoder", "EncoderConfig", "init_weights"]


def build_norm(cfg: EncoderConfig, dim: int) -> nn.Module:
    return NORMS.kind(cfg.norm)(dim, cfg)


class Embeddings(nn.Module):
    """Token + position + segment embeddings, norm, dropout; projected up when factorised. Learned
    positions only where the position scheme adds them at the input; segments unless
    model.segment_embeddings=false (ModernBERT, NeoBERT)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        dim = cfg.embedding_dim
        self.word_embeddings = nn.Embedding(cfg.vocab_size, dim, padding_idx=cfg.pad_token_id)
        # DeBERTa-v3 and XLNet bring positions in through attention only
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, dim) if cfg.position_biased_input else None
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, dim) if cfg.segment_embeddings else None
        self.norm = build_norm(cfg, dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.projection = nn.Linear(dim, cfg.hidden_size) if dim != cfg.hidden_size else nn.Identity()

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor], position_ids: Optional[Tensor] = None) -> Tensor:
        x = self.word_embeddings(input_ids)
        if self.position_embeddings is not None:
            if position_ids is None:
                x = x + self.position_embeddings.weight[: input_ids.shape[1]]
            else:  # packed documents: positions restart at each document
                x = x + self.position_embeddings(position_ids)
        if self.token_type_embeddings is not None:
            # segment 0 everywhere when no ids come, without materialising a tensor of zeros
            segments = self.token_type_embeddings
            x = x + (segments(token_type_ids) if token_type_ids is not None else segments.weight[0])
        return self.projection(self.dropout(self.norm(x)))


class Block(nn.Module):
    """One transformer layer; attention and FFN may be shared with other blocks (ALBERT)."""

    def __init__(self, cfg: EncoderConfig, attention: nn.Module, ffn: nn.Module, spec: LayerSpec):
        super().__init__()
        self.attention, self.ffn, self.pre_norm = attention, ffn, cfg.norm_position == "pre"
        # ModernBERT: layer 0's input is the embedding norm's output already (pre-norm only, config-checked)
        first_without = spec.index == 0 and not cfg.first_attention_norm
        self.attention_norm = nn.Identity() if first_without else build_norm(cfg, cfg.hidden_size)
        self.ffn_norm = build_norm(cfg, cfg.hidden_size)
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


def build_blocks(cfg: EncoderConfig, specs: tuple[LayerSpec, ...]) -> nn.ModuleList:
    """Block i from specs[i]. ALBERT sharing: `all` reuses one block, `attention`/`ffn` only that
    sublayer; a shared module is built from the first layer's spec."""

    def attention(spec: LayerSpec) -> nn.Module:
        return ATTENTIONS.kind(spec.attention)(cfg, spec)

    def ffn() -> nn.Module:
        return FEED_FORWARDS.kind(cfg.ffn)(cfg)

    if cfg.share_layers == "all":
        block = Block(cfg, attention(specs[0]), ffn(), specs[0])
        return nn.ModuleList([block] * len(specs))
    shared_attention = attention(specs[0]) if cfg.share_layers == "attention" else None
    shared_ffn = ffn() if cfg.share_layers == "ffn" else None
    return nn.ModuleList(Block(cfg, shared_attention or attention(spec), shared_ffn or ffn(), spec) for spec in specs)


class BertEncoder(nn.Module):
    """input ids [B, L] (+ segment ids, + attention mask with 1 = token) -> hidden states [B, L, H]."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.config = cfg
        self.specs = layer_specs(cfg)
        self.embeddings = Embeddings(cfg)
        self.layers = build_blocks(cfg, self.specs)
        self.positions = POSITIONS.kind(cfg.positions)(cfg)  # shared by all layers
        self.final_norm = build_norm(cfg, cfg.hidden_size) if cfg.norm_position == "pre" else nn.Identity()
        self.apply(init_weights)

    def layer_masks(self, input_ids: Tensor, attention_mask: Optional[Tensor],
                    document_ids: Optional[Tensor] = None) -> list[Optional[Tensor]]:
        """Each layer's attention mask, built once per distinct layer kind by its attention kind."""
        tokens = TokenLayout(input_ids.shape[1], input_ids.device, attention_mask, document_ids)
        built: dict[tuple, Optional[Tensor]] = {}
        for spec in self.specs:
            if spec.kind not in built:
                built[spec.kind] = ATTENTIONS[spec.attention].build_mask(spec, tokens)
        return [built[spec.kind] for spec in self.specs]

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor] = None,
                attention_mask: Optional[Tensor] = None, output_layers: bool = False, *,
                position_ids: Optional[Tensor] = None, document_ids: Optional[Tensor] = None) -> Tensor | list[Tensor]:
        """Last hidden states [B, L, H]; with output_layers, [embeddings, layer 1, ..., layer N]
        (the last one final-normed), for objectives that re-run layers (DeBERTa's EMD).
        Document-masked packing (data.pack_attention=document): document_ids [B, L] (-1 = padding) keep
        attention within each packed document; position_ids [B, L] restart at each (else 0..L-1)."""
        masks = self.layer_masks(input_ids, attention_mask, document_ids)
        context = self.positions(input_ids, token_type_ids, attention_mask, position_ids)
        x = self.embeddings(input_ids, token_type_ids, position_ids)
        layers = [x]
        for layer, mask in zip(self.layers, masks):
            x = layer(x, mask, context)
            layers.append(x)
        layers[-1] = self.final_norm(x)
        return layers if output_layers else layers[-1]


def init_weights(module: nn.Module) -> None:
    """BERT's initialisation: N(0, 0.02) weights, zero biases; a norm or feed-forward kind (and any
    nn.LayerNorm, e.g. a head's) by its reset_parameters: unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])
    elif (isinstance(module, nn.LayerNorm) or owns_init(module)) and hasattr(module, "reset_parameters"):
        module.reset_parameters()
