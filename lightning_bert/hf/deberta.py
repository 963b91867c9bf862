"""Weight map between our encoder with disentangled attention and transformers' DeBERTa-v2
(DebertaV2Model / DebertaV2ForMaskedLM with legacy=False, norm_rel_ebd="layer_norm").

DebertaV2 is post-LN, projects factorised embeddings before its LayerNorm (ours after), and has
no enhanced mask decoder (transformers issue #14585): configs with norm_position=pre or embedding_size
are refused; EMD's own position table (objectives.mlm.emd.*) is not exported.
transformers is imported only inside hf_config(), never by the maps themselves.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_bert.errors import UserError
from lightning_bert.hf.adapter import HFAdapter, rename_from_hf
from lightning_bert.model.config import EncoderConfig

PREFIX = "deberta."
HEAD = {"dense": "lm_predictions.lm_head.dense", "norm": "lm_predictions.lm_head.LayerNorm",
        "bias": "lm_predictions.lm_head.bias"}


def _check(cfg: EncoderConfig) -> None:
    """A one-line UserError for a config DebertaV2 cannot compute exactly."""
    if cfg.attention != "disentangled":
        raise UserError(f"model.attention={cfg.attention} has no DeBERTa layout (see hf/bert.py, hf/xlnet.py)")
    if cfg.norm_position != "post":
        raise UserError("model.norm_position=pre has no DeBERTa layout (DebertaV2 is post-LN)")
    if cfg.embedding_dim != cfg.hidden_size:
        raise UserError("model.embedding_size has no exact DeBERTa layout (DebertaV2 projects before its LayerNorm)")


def _layer_names(cfg: EncoderConfig) -> dict[str, str]:
    """Our per-layer names (without `encoder.layers.i.`) -> theirs (without `deberta.encoder.layer.i.`)."""
    names = {"attention.query": "attention.self.query_proj", "attention.key": "attention.self.key_proj",
             "attention.value": "attention.self.value_proj", "attention.out": "attention.output.dense",
             "attention_norm": "attention.output.LayerNorm", "ffn.up": "intermediate.dense",
             "ffn.down": "output.dense", "ffn_norm": "output.LayerNorm"}
    if not cfg.share_att_key:
        if "c2p" in cfg.pos_att_type:
            names["attention.pos_key"] = "attention.self.pos_key_proj"
        if "p2c" in cfg.pos_att_type:
            names["attention.pos_query"] = "attention.self.pos_query_proj"
    return names


def _names(cfg: EncoderConfig) -> dict[str, str]:
    """Every one of our parameter names -> its DebertaV2ForMaskedLM name (the MLM head's tied decoder aside)."""
    emb = {"word_embeddings.weight": "word_embeddings.weight", "norm.weight": "LayerNorm.weight",
           "norm.bias": "LayerNorm.bias"}
    if cfg.type_vocab_size > 0:
        emb["token_type_embeddings.weight"] = "token_type_embeddings.weight"
    if cfg.position_biased_input:
        emb["position_embeddings.weight"] = "position_embeddings.weight"
    out = {f"encoder.embeddings.{k}": f"{PREFIX}embeddings.{v}" for k, v in emb.items()}
    out.update({"encoder.positions.embeddings.weight": f"{PREFIX}encoder.rel_embeddings.weight",
                "encoder.positions.norm.weight": f"{PREFIX}encoder.LayerNorm.weight",
                "encoder.positions.norm.bias": f"{PREFIX}encoder.LayerNorm.bias"})
    for i in range(cfg.num_layers):
        for mine, theirs in _layer_names(cfg).items():
            for p in ("weight", "bias"):
                out[f"encoder.layers.{i}.{mine}.{p}"] = f"{PREFIX}encoder.layer.{i}.{theirs}.{p}"
    for p in ("weight", "bias"):
        out[f"objectives.mlm.head.dense.{p}"] = f"{HEAD['dense']}.{p}"
        out[f"objectives.mlm.head.norm.{p}"] = f"{HEAD['norm']}.{p}"
    out["objectives.mlm.head.bias"] = HEAD["bias"]
    return out


class DebertaV2Adapter(HFAdapter):
    """DeBERTa-v2/v3 (DebertaV2ForMaskedLM): disentangled attention, post-LN, no factorised embeddings."""

    attentions = ("disentangled",)
    model_types = ("deberta-v2",)
    architectures = ("DebertaV2ForMaskedLM",)

    def architecture(self, cfg: EncoderConfig, state: dict[str, Tensor]) -> str:
        return "DebertaV2ForMaskedLM"

    def hf_config(self, cfg: EncoderConfig, **extra: Any) -> Any:
        """The DebertaV2Config that computes what `cfg` does; `extra` (e.g. architectures=[...]) is passed through."""
        import transformers

        _check(cfg)
        return transformers.DebertaV2Config(
            vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size, hidden_act="gelu",
            hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.attention_dropout,
            max_position_embeddings=cfg.max_position_embeddings, type_vocab_size=cfg.type_vocab_size,
            layer_norm_eps=cfg.layer_norm_eps, pad_token_id=cfg.pad_token_id, initializer_range=0.02,
            relative_attention=True, max_relative_positions=cfg.max_relative_positions,
            position_buckets=cfg.position_buckets if cfg.position_buckets > 0 else -1,
            pos_att_type=list(cfg.pos_att_type), share_att_key=cfg.share_att_key, norm_rel_ebd="layer_norm",
            position_biased_input=cfg.position_biased_input, embedding_size=cfg.hidden_size, legacy=False, **extra)

    def encoder_kwargs(self, hf: dict[str, Any]) -> dict[str, Any]:
        """EncoderConfig fields from a DebertaV2 config.json (a plain dict, no transformers)."""
        if "layer_norm" not in str(hf.get("norm_rel_ebd", "none")) or not hf.get("relative_attention", False):
            raise UserError("DeBERTa configs need relative_attention=true and norm_rel_ebd=layer_norm (v2/v3 style)")
        if hf.get("conv_kernel_size", 0) or hf.get("embedding_size", hf["hidden_size"]) != hf["hidden_size"]:
            raise UserError("DeBERTa with conv_kernel_size or embedding_size != hidden_size is not supported")
        terms = hf.get("pos_att_type") or []
        terms = [t.strip() for t in terms.lower().split("|")] if isinstance(terms, str) else list(terms)
        return dict(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
                    num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
                    embedding_size=None, share_layers="none", norm_position="post", dropout=hf.get("hidden_dropout_prob", 0.1),
                    attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
                    type_vocab_size=hf.get("type_vocab_size", 0), layer_norm_eps=hf.get("layer_norm_eps", 1e-7),
                    max_position_embeddings=hf.get("max_position_embeddings", 512), attention="disentangled",
                    position_biased_input=hf.get("position_biased_input", True),
                    max_relative_positions=hf.get("max_relative_positions", -1),
                    position_buckets=max(hf.get("position_buckets", -1), 0),
                    share_att_key=hf.get("share_att_key", False),
                    pos_att_type=tuple(t for t in ("c2p", "p2c") if t in terms))

    def to_hf(self, state: dict[str, Tensor], cfg: EncoderConfig) -> dict[str, Tensor]:
        """Our PretrainModule state dict -> DebertaV2ForMaskedLM names (the MLM head when present)."""
        _check(cfg)
        out = {theirs: state[mine] for mine, theirs in _names(cfg).items()
               if mine in state or not mine.startswith("objectives.")}
        return {k: v.detach().clone().contiguous() for k, v in out.items()}

    def from_hf(self, state: dict[str, Tensor], cfg: EncoderConfig) -> dict[str, Tensor]:
        """DebertaV2Model / DebertaV2ForMaskedLM names -> ours (the inverse of to_hf)."""
        _check(cfg)
        out = rename_from_hf(state, _names(cfg), PREFIX)
        if "objectives.mlm.head.dense.weight" in out:
            out["objectives.mlm.head.decoder_weight"] = out["encoder.embeddings.word_embeddings.weight"]
        return out
