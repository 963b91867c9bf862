"""Weight map between our encoder with relative attention (+ the PLM objective) and transformers' XLNet
(XLNetLMHeadModel, attn_type="bi", no memory, untie_r, clamp_len=-1, bi_data=False).

Layers, relative biases, segment table, query start (mask_emb) and LM head map one to one. What XLNet lacks:
- the input LayerNorm and segment embeddings our shared Embeddings add (BERT's stack, for every attention
  kind). to_hf folds them into XLNet's word table: row i = LN(word_i + segment_0) (then the ALBERT
  projection, if any), exact for the content and query streams whenever segment rows 0 and 1 are equal
  (a warning says so otherwise: segment 1 tokens then lose their input row); the LM head keeps our raw
  tied table, so lm_loss is exported untied (tie_word_embeddings=False);
- absolute positions at the input, pre-LN blocks and an MLM transform head: refused / not exported.
from_hf is the inverse of to_hf up to that fold: the word table comes back from lm_loss, the input
LayerNorm and segment rows come back neutral (ones / zeros), so an XLNet checkpoint imported through it
computes LN(word) where XLNet computed word.
transformers is imported only inside hf_config(), never by the maps themselves.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_bert.errors import UserError
from lightning_bert.hf.adapter import HFAdapter
from lightning_bert.model.config import EncoderConfig

log = logging.getLogger(__name__)
PREFIX = "transformer."
LAYER = {"attention_norm": "rel_attn.layer_norm", "ffn.up": "ff.layer_1", "ffn.down": "ff.layer_2",
         "ffn_norm": "ff.layer_norm"}  # plain renames inside layer i (weight and bias)


def _check(cfg: EncoderConfig) -> None:
    """A one-line UserError for a config XLNet cannot compute exactly."""
    if cfg.attention != "relative":
        raise UserError(f"model.attention={cfg.attention} has no XLNet layout (see hf/bert.py, hf/deberta.py)")
    if cfg.norm_position != "post":
        raise UserError("model.norm_position=pre has no XLNet layout (XLNet is post-LN)")
    if cfg.position_biased_input:
        raise UserError("model.position_biased_input=true has no XLNet layout (XLNet has relative positions only)")


def _heads(w: Tensor, cfg: EncoderConfig) -> Tensor:
    """Our Linear weight [n*d, H] (input H) -> XLNet's [H, n, d]."""
    return w.t().reshape(cfg.hidden_size, cfg.num_heads, cfg.head_dim)


def _input_table(state: dict[str, Tensor], cfg: EncoderConfig) -> Tensor:
    """Our Embeddings for segment 0, as one table: projection(LN(word + segment_0))."""
    e = "encoder.embeddings."
    types = state[e + "token_type_embeddings.weight"]
    if types.shape[0] > 1 and not torch.equal(types[0], types[1]):
        log.warning("XLNet has no segment embeddings at the input: exported with segment 0's row for every token "
                    "(segments still reach attention through its relative segment encoding)")
    x = F.layer_norm(state[e + "word_embeddings.weight"] + types[0], (cfg.embedding_dim,),
                     state[e + "norm.weight"], state[e + "norm.bias"], cfg.layer_norm_eps)
    if e + "projection.weight" in state:
        x = F.linear(x, state[e + "projection.weight"], state[e + "projection.bias"])
    return x


class XLNetAdapter(HFAdapter):
    """XLNet (XLNetLMHeadModel): relative attention + the PLM objective (see the module docstring)."""

    attentions = ("relative",)
    model_types = ("xlnet",)
    architectures = ("XLNetLMHeadModel",)
    import_notice = ("XLNet imports up to hf/xlnet.py's input fold (its word table comes back under a neutral "
                     "input LayerNorm), so outputs are close to, not equal to, the directory's")

    def architecture(self, cfg: EncoderConfig, state: dict[str, Tensor]) -> str:
        return "XLNetLMHeadModel"

    def encoder_kwargs(self, hf: dict[str, Any]) -> dict[str, Any]:
        """EncoderConfig fields from an XLNet config.json."""
        if hf.get("attn_type", "bi") != "bi" or hf.get("ff_activation", "gelu") != "gelu":
            raise UserError("XLNet configs need attn_type=bi and ff_activation=gelu")
        return dict(vocab_size=hf["vocab_size"], hidden_size=hf["d_model"], num_layers=hf["n_layer"],
                    num_heads=hf["n_head"], intermediate_size=hf["d_inner"], dropout=hf.get("dropout", 0.1),
                    attention_dropout=hf.get("dropout", 0.1), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
                    max_position_embeddings=512, embedding_size=None, share_layers="none", norm_position="post",
                    attention="relative", position_biased_input=False)

    def hf_config(self, cfg: EncoderConfig, **extra: Any) -> Any:
        """The XLNetConfig that computes what `cfg` does; `extra` (e.g. architectures=[...]) is passed through."""
        import transformers

        _check(cfg)
        return transformers.XLNetConfig(
            vocab_size=cfg.vocab_size, d_model=cfg.hidden_size, n_layer=cfg.num_layers, n_head=cfg.num_heads,
            d_inner=cfg.intermediate_size, ff_activation="gelu", untie_r=True, attn_type="bi", mem_len=None,
            reuse_len=None, use_mems_eval=False, use_mems_train=False, bi_data=False, clamp_len=-1,
            same_length=False, dropout=cfg.dropout, layer_norm_eps=cfg.layer_norm_eps, initializer_range=0.02,
            pad_token_id=cfg.pad_token_id, tie_word_embeddings=False, **extra)

    def to_hf(self, state: dict[str, Tensor], cfg: EncoderConfig) -> dict[str, Tensor]:
        """Our PretrainModule state dict -> XLNetLMHeadModel's (the MLM transform head, if any, is not exported)."""
        _check(cfg)
        out = {PREFIX + "word_embedding.weight": _input_table(state, cfg)}
        hidden = cfg.hidden_size
        for i in range(cfg.num_layers):
            ours, theirs = f"encoder.layers.{i}.", f"{PREFIX}layer.{i}."
            a, t = ours + "attention.", theirs + "rel_attn."
            for name, w in zip("qkv", state[a + "qkv.weight"].split(hidden)):
                out[t + name] = _heads(w, cfg)
            out[t + "r"] = _heads(state[a + "r.weight"], cfg)
            out[t + "o"] = state[a + "out.weight"].reshape(hidden, cfg.num_heads, cfg.head_dim)
            for name in ("r_w_bias", "r_r_bias", "r_s_bias"):
                out[t + name] = state[a + name].squeeze(1)
            out[t + "seg_embed"] = state[a + "seg_embed"].permute(2, 0, 1)
            for mine, yours in LAYER.items():
                for p in ("weight", "bias"):
                    out[f"{theirs}{yours}.{p}"] = state[f"{ours}{mine}.{p}"]
        head = "objectives.plm."
        if head + "mask_emb" in state:
            out[PREFIX + "mask_emb"] = state[head + "mask_emb"].reshape(1, 1, hidden)
            table, bias = state["encoder.embeddings.word_embeddings.weight"], state[head + "head.bias"]
            if head + "head.projection.weight" in state:  # W (P g + b) = (W P) g + W b
                bias = bias + table @ state[head + "head.projection.bias"]
                table = table @ state[head + "head.projection.weight"]
            out["lm_loss.weight"], out["lm_loss.bias"] = table, bias
        return out

    def from_hf(self, state: dict[str, Tensor], cfg: EncoderConfig) -> dict[str, Tensor]:
        """XLNetLMHeadModel's state dict -> ours (the inverse of to_hf up to the input fold, see the docstring)."""
        _check(cfg)
        if cfg.embedding_dim != cfg.hidden_size:
            raise UserError("model.embedding_size: an XLNet checkpoint has no factorised embeddings to import")
        hidden, e = cfg.hidden_size, "encoder.embeddings."
        table = state.get("lm_loss.weight", state[PREFIX + "word_embedding.weight"])
        out = {e + "word_embeddings.weight": table,
               e + "token_type_embeddings.weight": torch.zeros(cfg.type_vocab_size, hidden),
               e + "norm.weight": torch.ones(hidden), e + "norm.bias": torch.zeros(hidden)}
        for i in range(cfg.num_layers):
            ours, theirs = f"encoder.layers.{i}.", f"{PREFIX}layer.{i}."
            a, t = ours + "attention.", theirs + "rel_attn."
            out[a + "qkv.weight"] = torch.cat([state[t + n].reshape(hidden, -1).t() for n in "qkv"])
            out[a + "r.weight"] = state[t + "r"].reshape(hidden, -1).t()
            out[a + "out.weight"] = state[t + "o"].reshape(hidden, -1)
            for name in ("r_w_bias", "r_r_bias", "r_s_bias"):
                out[a + name] = state[t + name].unsqueeze(1)
            out[a + "seg_embed"] = state[t + "seg_embed"].permute(1, 2, 0)
            for mine, yours in LAYER.items():
                for p in ("weight", "bias"):
                    out[f"{ours}{mine}.{p}"] = state[f"{theirs}{yours}.{p}"]
        if PREFIX + "mask_emb" in state:
            out["objectives.plm.mask_emb"] = state[PREFIX + "mask_emb"].reshape(hidden)
        if "lm_loss.bias" in state:
            out["objectives.plm.head.bias"] = state["lm_loss.bias"]
            out["objectives.plm.head.decoder_weight"] = table
        return out
