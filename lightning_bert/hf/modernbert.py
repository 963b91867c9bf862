"""Weight map between our encoder in ModernBERT's configuration and transformers' ModernBertForMaskedLM.

ModernBERT = absolute attention with RoPE (no learned input positions), GeGLU feed-forwards, LayerNorm
pre-norm with an embedding norm, no attention norm on layer 0 and a final norm, no segment embeddings,
a sliding window on all but every `global_every`-th layer. ModernBertConfig has one bias flag per group
(attention_bias: Wqkv + Wo, mlp_bias: Wi + Wo, norm_bias: every norm, the head's included; classifier_bias:
the head's dense; decoder_bias), as ours. Anything else (RMSNorm, SwiGLU, post-norm, ...) has no exact
layout and is refused in one line naming the option; NeoBERT has no transformers class at all.
transformers is imported only inside hf_config(), never by the maps themselves.
"""
from __future__ import annotations

import logging
from typing import Any

from torch import Tensor

from lightning_bert.data.tokenizer import SPECIAL_TOKENS
from lightning_bert.errors import UserError
from lightning_bert.hf.adapter import HFAdapter, rename_from_hf
from lightning_bert.model.config import EncoderConfig

log = logging.getLogger(__name__)

PREFIX = "model."
FULL, SLIDING = "full_attention", "sliding_attention"  # ModernBertConfig.layer_types values
NEOBERT = "NeoBERT has no transformers class"


def _check(cfg: EncoderConfig) -> None:
    """A one-line UserError for a config ModernBertForMaskedLM cannot compute exactly."""
    if cfg.ffn == "swiglu":
        raise UserError(f"model.ffn=swiglu has no transformers layout ({NEOBERT}; ModernBERT's is geglu)")
    if cfg.norm != "layernorm":
        raise UserError(f"model.norm={cfg.norm} has no exact ModernBERT layout (ModernBertForMaskedLM uses LayerNorm; "
                        f"{NEOBERT})")
    options = {  # option -> (ModernBERT's value, ours)
        "attention": ("absolute", cfg.attention), "positions": ("rope", cfg.positions),
        "position_biased_input": (False, cfg.position_biased_input), "ffn": ("geglu", cfg.ffn),
        "norm_position": ("pre", cfg.norm_position), "first_attention_norm": (False, cfg.first_attention_norm),
        "segment_embeddings": (False, cfg.segment_embeddings), "share_layers": ("none", cfg.share_layers),
        "embedding_size": (cfg.hidden_size, cfg.embedding_dim)}
    for option, (theirs, ours) in options.items():
        if ours != theirs:
            raise UserError(f"model.{option}={_spell(ours)} has no exact ModernBERT layout "
                            f"(ModernBertForMaskedLM has {option}={_spell(theirs)})")


def _spell(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _names(cfg: EncoderConfig) -> dict[str, str]:
    """Every one of our parameter names -> its ModernBertForMaskedLM name (the tied decoder weight aside)."""
    norm = ("weight", "bias") if cfg.norm_bias else ("weight",)
    out = {"encoder.embeddings.word_embeddings.weight": f"{PREFIX}embeddings.tok_embeddings.weight"}
    out.update({f"encoder.embeddings.norm.{p}": f"{PREFIX}embeddings.norm.{p}" for p in norm})
    out.update({f"encoder.final_norm.{p}": f"{PREFIX}final_norm.{p}" for p in norm})
    linears = {"attention.qkv": ("attn.Wqkv", cfg.attention_bias), "attention.out": ("attn.Wo", cfg.attention_bias),
               "ffn.up": ("mlp.Wi", cfg.mlp_bias), "ffn.down": ("mlp.Wo", cfg.mlp_bias)}
    for i in range(cfg.num_layers):
        ours, theirs = f"encoder.layers.{i}.", f"{PREFIX}layers.{i}."
        for mine, (name, bias) in linears.items():
            for p in ("weight", "bias") if bias else ("weight",):
                out[f"{ours}{mine}.{p}"] = f"{theirs}{name}.{p}"
        norms = {"ffn_norm": "mlp_norm"} if i == 0 else {"attention_norm": "attn_norm", "ffn_norm": "mlp_norm"}
        out.update({f"{ours}{mine}.{p}": f"{theirs}{name}.{p}" for mine, name in norms.items() for p in norm})
    head = "objectives.mlm.head."
    out.update({f"{head}dense.{p}": f"head.dense.{p}" for p in (("weight", "bias") if cfg.head_bias else ("weight",))})
    out.update({f"{head}norm.{p}": f"head.norm.{p}" for p in norm})
    if cfg.decoder_bias:
        out[f"{head}bias"] = "decoder.bias"
    return out


def _layer_types(cfg: EncoderConfig) -> list[str]:
    """ModernBERT's per-layer kinds: layer i is global when i % global_every == 0 (theirs and ours alike)."""
    windowed = cfg.local_window is not None
    return [SLIDING if windowed and i % cfg.global_every else FULL for i in range(cfg.num_layers)]


def _global_every(layer_types: list[str]) -> int:
    """The n with layer i global iff i % n == 0, or a one-line UserError for another pattern."""
    is_global = [kind == FULL for kind in layer_types]
    for n in range(1, len(layer_types) + 1):
        if is_global == [i % n == 0 for i in range(len(layer_types))]:
            return n
    raise UserError(f"ModernBERT layer_types={layer_types} is not 'global every n-th layer from layer 0'; "
                    "model.global_every cannot express it")


class ModernBertAdapter(HFAdapter):
    """ModernBERT (ModernBertForMaskedLM): the RoPE configuration of absolute attention (see the docstring)."""

    attentions = ("absolute",)
    positions = ("rope",)
    model_types = ("modernbert",)
    architectures = ("ModernBertForMaskedLM",)
    input_names = ("input_ids", "attention_mask")  # no segment ids

    def architecture(self, cfg: EncoderConfig, state: dict[str, Tensor]) -> str:
        _check(cfg)
        return "ModernBertForMaskedLM"

    def hf_config(self, cfg: EncoderConfig, **extra: Any) -> Any:
        """The ModernBertConfig that computes what `cfg` does; `extra` (e.g. architectures=[...]) is passed through."""
        import transformers

        _check(cfg)
        cls_id, sep_id = SPECIAL_TOKENS.index("[CLS]"), SPECIAL_TOKENS.index("[SEP]")
        local_theta = cfg.local_rope_theta if cfg.local_rope_theta is not None else cfg.rope_theta
        return transformers.ModernBertConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size, hidden_activation="gelu",
            classifier_activation="gelu", max_position_embeddings=cfg.max_position_embeddings,
            norm_eps=cfg.layer_norm_eps, norm_bias=cfg.norm_bias, attention_bias=cfg.attention_bias,
            mlp_bias=cfg.mlp_bias, classifier_bias=cfg.head_bias, decoder_bias=cfg.decoder_bias,
            embedding_dropout=cfg.dropout, mlp_dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
            layer_types=_layer_types(cfg), local_attention=cfg.local_window or cfg.max_position_embeddings,
            rope_parameters={FULL: {"rope_type": "default", "rope_theta": cfg.rope_theta},
                             SLIDING: {"rope_type": "default", "rope_theta": local_theta}},
            pad_token_id=cfg.pad_token_id, cls_token_id=cls_id, bos_token_id=cls_id, sep_token_id=sep_id,
            eos_token_id=sep_id, tie_word_embeddings=True, initializer_range=0.02, **extra)

    def encoder_kwargs(self, hf: dict[str, Any]) -> dict[str, Any]:
        """EncoderConfig fields from a ModernBERT config.json (a plain dict, no transformers); old configs spell
        the pattern global_attn_every_n_layers and the bases global_rope_theta / local_rope_theta."""
        layers = hf["num_hidden_layers"]
        every = hf.get("global_attn_every_n_layers", 3)
        layer_types = hf.get("layer_types") or [SLIDING if i % every else FULL for i in range(layers)]
        rope = hf.get("rope_parameters") or {}
        for kind, params in rope.items():
            if params and params.get("rope_type", "default") != "default":
                raise UserError(f"ModernBERT rope_parameters.{kind}.rope_type={params['rope_type']} is not supported "
                                "(default RoPE only)")
        global_theta = (rope.get(FULL) or {}).get("rope_theta", hf.get("global_rope_theta", 160_000.0))
        local_theta = (rope.get(SLIDING) or {}).get("rope_theta", hf.get("local_rope_theta", 10_000.0))
        windowed = SLIDING in layer_types
        for key in ("hidden_activation", "classifier_activation"):
            if hf.get(key, "gelu") != "gelu":
                log.warning("ModernBERT %s=%s; ours is exact gelu, so outputs differ slightly", key, hf[key])
        if not hf.get("tie_word_embeddings", True):
            raise UserError("ModernBERT with tie_word_embeddings=false is not supported (our decoder is tied)")
        return dict(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=layers,
                    num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
                    embedding_size=None, share_layers="none", attention="absolute", positions="rope",
                    position_biased_input=False, ffn="geglu", norm="layernorm", norm_position="pre",
                    first_attention_norm=False, segment_embeddings=False,
                    attention_bias=hf.get("attention_bias", False), mlp_bias=hf.get("mlp_bias", False),
                    norm_bias=hf.get("norm_bias", False), head_bias=hf.get("classifier_bias", False),
                    decoder_bias=hf.get("decoder_bias", True), rope_theta=float(global_theta),
                    local_rope_theta=float(local_theta) if windowed else None,
                    local_window=hf.get("local_attention", 128) if windowed else None,
                    global_every=_global_every(layer_types), dropout=hf.get("mlp_dropout", 0.0),
                    attention_dropout=hf.get("attention_dropout", 0.0), layer_norm_eps=hf.get("norm_eps", 1e-5),
                    max_position_embeddings=hf.get("max_position_embeddings", 8192))

    def to_hf(self, state: dict[str, Tensor], cfg: EncoderConfig) -> dict[str, Tensor]:
        """Our PretrainModule state dict -> ModernBertForMaskedLM names (the decoder tied, as ours)."""
        _check(cfg)
        out = {theirs: state[mine] for mine, theirs in _names(cfg).items()}
        out["decoder.weight"] = state["encoder.embeddings.word_embeddings.weight"]
        return {k: v.detach().clone().contiguous() for k, v in out.items()}

    def from_hf(self, state: dict[str, Tensor], cfg: EncoderConfig) -> dict[str, Tensor]:
        """ModernBertModel / ModernBertForMaskedLM names -> ours (the inverse of to_hf)."""
        _check(cfg)
        out = rename_from_hf(state, _names(cfg), PREFIX)
        embeddings = out["encoder.embeddings.word_embeddings.weight"]
        if "decoder.weight" in state and not state["decoder.weight"].equal(embeddings):
            raise UserError("ModernBERT's decoder.weight differs from its token embeddings; ours is tied")
        if "objectives.mlm.head.dense.weight" in out:
            out["objectives.mlm.head.decoder_weight"] = embeddings
        return out
