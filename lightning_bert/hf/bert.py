"""Weight maps between our encoder (absolute attention) and transformers' BERT, ALBERT and RoBERTa-PreLayerNorm.

Which layout a config gets (`_layout`):
- bert: post-LN, no factorisation, no sharing -> BertForPreTraining (BertForMaskedLM without a pair head);
- albert: factorised embeddings and/or share_layers=all -> AlbertForPreTraining (AlbertForMaskedLM);
  shared layers become one layer group, unshared ones one group per layer;
- roberta-prelayernorm: norm_position=pre -> RobertaPreLayerNormForMaskedLM. Its positions start at pad_id + 1,
  so our row i is its row i + pad_id + 1; it has no pooler or pair head in the MLM class.
Every layout computes exactly what ours does when hidden_act is exact "gelu" (ours is F.gelu).
transformers is imported only inside hf_config(), never by the maps themselves.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_bert.errors import UserError
from lightning_bert.hf.adapter import HFAdapter, pair_head
from lightning_bert.model.config import EncoderConfig

ARCHITECTURES = {  # layout -> (with a pair head, MLM only)
    "bert": ("BertForPreTraining", "BertForMaskedLM"),
    "albert": ("AlbertForPreTraining", "AlbertForMaskedLM"),
    "roberta-prelayernorm": ("RobertaPreLayerNormForMaskedLM", "RobertaPreLayerNormForMaskedLM"),
}
PREFIX = {"bert": "bert.", "albert": "albert.", "roberta-prelayernorm": "roberta_prelayernorm."}


def _layout(cfg: EncoderConfig) -> str:
    """The transformers layout that computes exactly what `cfg` does, or a one-line UserError naming the option."""
    if cfg.attention != "absolute" or not cfg.position_biased_input:
        raise UserError(f"model.attention={cfg.attention} has no BERT-family layout (see hf/deberta.py, hf/xlnet.py)")
    if cfg.share_layers in ("attention", "ffn"):
        raise UserError(f"model.share_layers={cfg.share_layers} has no exact transformers layout "
                        "(ALBERT shares whole layers only: use none or all)")
    if cfg.norm_position == "pre":
        if cfg.embedding_dim != cfg.hidden_size or cfg.share_layers != "none":
            raise UserError("model.norm_position=pre with embedding_size or share_layers has no exact transformers layout "
                            "(RobertaPreLayerNorm has neither)")
        return "roberta-prelayernorm"
    return "albert" if cfg.embedding_dim != cfg.hidden_size or cfg.share_layers == "all" else "bert"


def _layer_names(kind: str, i: int) -> dict[str, str]:
    """Our per-layer names (without `encoder.layers.i.`) -> theirs (without the model prefix)."""
    if kind == "albert":
        p = f"encoder.albert_layer_groups.{i}.albert_layers.0."
        return {"attention.out": p + "attention.dense", "attention_norm": p + "attention.LayerNorm",
                "ffn.up": p + "ffn", "ffn.down": p + "ffn_output", "ffn_norm": p + "full_layer_layer_norm",
                "q": p + "attention.query", "k": p + "attention.key", "v": p + "attention.value"}
    p = f"encoder.layer.{i}."
    names = {"attention.out": p + "attention.output.dense", "ffn.up": p + "intermediate.dense",
             "ffn.down": p + "output.dense", "q": p + "attention.self.query", "k": p + "attention.self.key",
             "v": p + "attention.self.value"}
    if kind == "bert":
        names.update({"attention_norm": p + "attention.output.LayerNorm", "ffn_norm": p + "output.LayerNorm"})
    else:  # pre-LN: the norm before attention / before the FFN
        names.update({"attention_norm": p + "attention.LayerNorm", "ffn_norm": p + "intermediate.LayerNorm"})
    return names


def _head_names(kind: str) -> dict[str, str]:
    """Our MLM head names (without `objectives.mlm.head.`) -> theirs."""
    if kind == "bert":
        return {"dense": "cls.predictions.transform.dense", "norm": "cls.predictions.transform.LayerNorm",
                "bias": "cls.predictions.bias"}
    if kind == "albert":
        return {"dense": "predictions.dense", "norm": "predictions.LayerNorm", "bias": "predictions.bias"}
    return {"dense": "lm_head.dense", "norm": "lm_head.layer_norm", "bias": "lm_head.bias"}


def _pair_names(kind: str) -> dict[str, str]:
    """Our pair head names (without `objectives.<nsp|sop>.head.`) -> theirs; none for the MLM-only layout."""
    if kind == "bert":
        return {"pooler": "bert.pooler.dense", "classifier": "cls.seq_relationship"}
    if kind == "albert":
        return {"pooler": "albert.pooler", "classifier": "sop_classifier.classifier"}
    return {}


def _kind_of(state: dict[str, Tensor], cfg: EncoderConfig) -> str:
    """The layout a transformers state dict is in (an ALBERT with E == H and no sharing is still ALBERT)."""
    for kind in ("albert", "roberta-prelayernorm"):
        if any(k.startswith(PREFIX[kind]) or k.startswith("encoder.albert_layer_groups") and kind == "albert"
               for k in state):
            return kind
    return _layout(cfg)


def _groups(kind: str, cfg: EncoderConfig) -> int:
    return 1 if kind == "albert" and cfg.share_layers == "all" else cfg.num_layers

class BertFamilyAdapter(HFAdapter):
    """BERT, ALBERT and RoBERTa-PreLayerNorm: the layout is chosen by the options (see the module docstring)."""

    attentions = ("absolute",)
    model_types = ("bert", "albert", "roberta-prelayernorm")
    architectures = tuple(dict.fromkeys(name for pair in ARCHITECTURES.values() for name in pair))

    def architecture(self, cfg: EncoderConfig, state: dict[str, Tensor]) -> str:
        with_pair, mlm_only = ARCHITECTURES[_layout(cfg)]
        return with_pair if pair_head(state) else mlm_only

    def hf_config(self, cfg: EncoderConfig, **extra: Any) -> Any:
        """The transformers config of `cfg`'s layout; `extra` (e.g. architectures=[...]) is passed through."""
        import transformers

        kind = _layout(cfg)
        common = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                      num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size, hidden_act="gelu",
                      hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.attention_dropout,
                      type_vocab_size=cfg.type_vocab_size, layer_norm_eps=cfg.layer_norm_eps,
                      pad_token_id=cfg.pad_token_id, initializer_range=0.02)
        if kind == "bert":
            return transformers.BertConfig(max_position_embeddings=cfg.max_position_embeddings, **common, **extra)
        if kind == "albert":
            groups = 1 if cfg.share_layers == "all" else cfg.num_layers
            return transformers.AlbertConfig(max_position_embeddings=cfg.max_position_embeddings,
                                             embedding_size=cfg.embedding_dim, num_hidden_groups=groups,
                                             inner_group_num=1, classifier_dropout_prob=cfg.dropout, **common, **extra)
        return transformers.RobertaPreLayerNormConfig(
            max_position_embeddings=cfg.max_position_embeddings + cfg.pad_token_id + 1, **common, **extra)

    def encoder_kwargs(self, hf: dict[str, Any]) -> dict[str, Any]:
        """EncoderConfig fields from a BERT / ALBERT / RoBERTa-PreLayerNorm config.json."""
        kind = hf.get("model_type")
        out = dict(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
                   num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
                   dropout=hf.get("hidden_dropout_prob", 0.1),
                   attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
                   type_vocab_size=hf.get("type_vocab_size", 2), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
                   max_position_embeddings=hf.get("max_position_embeddings", 512), embedding_size=None,
                   share_layers="none", norm_position="post", attention="absolute")
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise UserError(f"position_embedding_type={hf['position_embedding_type']} is not supported (absolute only)")
        if kind == "albert":
            groups, inner = hf.get("num_hidden_groups", 1), hf.get("inner_group_num", 1)
            if inner != 1 or groups not in (1, out["num_layers"]):
                raise UserError(f"ALBERT with num_hidden_groups={groups}, inner_group_num={inner} is not supported "
                                "(one group shared by all layers, or one group per layer)")
            out.update(embedding_size=hf.get("embedding_size", 128),
                       share_layers="all" if groups == 1 and out["num_layers"] > 1 else "none")
        elif kind == "roberta-prelayernorm":
            out.update(norm_position="pre",
                       max_position_embeddings=out["max_position_embeddings"] - hf.get("pad_token_id", 1) - 1)
        return out

    def to_hf(self, state: dict[str, Tensor], cfg: EncoderConfig) -> dict[str, Tensor]:
        """Our PretrainModule state dict -> transformers names of `_layout(cfg)` (MLM head, pooler, pair head)."""
        kind, out = _layout(cfg), {}
        pre = PREFIX[kind]
        emb = "encoder.embeddings."
        out[pre + "embeddings.word_embeddings.weight"] = state[emb + "word_embeddings.weight"]
        out[pre + "embeddings.token_type_embeddings.weight"] = state[emb + "token_type_embeddings.weight"]
        positions = state[emb + "position_embeddings.weight"]
        if kind == "roberta-prelayernorm":  # rows 0..pad_id are RoBERTa's padding / unused rows
            positions = torch.cat([positions.new_zeros(cfg.pad_token_id + 1, positions.shape[1]), positions])
        out[pre + "embeddings.position_embeddings.weight"] = positions
        for p in ("weight", "bias"):
            out[f"{pre}embeddings.LayerNorm.{p}"] = state[f"{emb}norm.{p}"]
            if kind == "albert":  # ALBERT always projects E -> H; an identity when E == H
                proj = state.get(f"{emb}projection.{p}")
                if proj is None:
                    proj = torch.eye(cfg.hidden_size) if p == "weight" else torch.zeros(cfg.hidden_size)
                out[f"{pre}encoder.embedding_hidden_mapping_in.{p}"] = proj
            if kind == "roberta-prelayernorm":
                out[f"{pre}LayerNorm.{p}"] = state[f"encoder.final_norm.{p}"]
        for i in range(_groups(kind, cfg)):
            names, ours = _layer_names(kind, i), f"encoder.layers.{i}."
            for p in ("weight", "bias"):
                for q, tensor in zip("qkv", state[f"{ours}attention.qkv.{p}"].chunk(3)):
                    out[f"{pre}{names[q]}.{p}"] = tensor
                for mine in ("attention.out", "attention_norm", "ffn.up", "ffn.down", "ffn_norm"):
                    out[f"{pre}{names[mine]}.{p}"] = state[f"{ours}{mine}.{p}"]
        head = _head_names(kind)
        for p in ("weight", "bias"):
            out[f"{head['dense']}.{p}"] = state[f"objectives.mlm.head.dense.{p}"]
            out[f"{head['norm']}.{p}"] = state[f"objectives.mlm.head.norm.{p}"]
        out[head["bias"]] = state["objectives.mlm.head.bias"]
        decoder = head["bias"].rsplit(".", 1)[0] + ".decoder"
        out[decoder + ".weight"] = state[emb + "word_embeddings.weight"]  # tied, as ours
        out[decoder + ".bias"] = state["objectives.mlm.head.bias"]
        pair = pair_head(state)
        for mine, theirs in _pair_names(kind).items() if pair else ():
            for p in ("weight", "bias"):
                out[f"{theirs}.{p}"] = state[f"objectives.{pair}.head.{mine}.{p}"]
        return {k: v.detach().clone().contiguous() for k, v in out.items()}

    def from_hf(self, state: dict[str, Tensor], cfg: EncoderConfig) -> dict[str, Tensor]:
        """transformers names -> ours (the inverse of to_hf); the pair head (if present) goes to objectives.nsp
        (HFInit.load_into hands it to the run's NSP or SOP)."""
        kind, out = _kind_of(state, cfg), {}
        pre = PREFIX[kind]
        if not any(k.startswith(pre) for k in state):  # a bare base model (BertModel) saves without the prefix
            state = {pre + k: v for k, v in state.items()}
        emb = "encoder.embeddings."

        def take(name: str) -> Tensor:
            if name not in state:
                raise UserError(f"weight {name} is missing from the transformers checkpoint")
            return state[name]

        out[emb + "word_embeddings.weight"] = take(pre + "embeddings.word_embeddings.weight")
        out[emb + "token_type_embeddings.weight"] = take(pre + "embeddings.token_type_embeddings.weight")
        positions = take(pre + "embeddings.position_embeddings.weight")
        if kind == "roberta-prelayernorm":
            positions = positions[cfg.pad_token_id + 1:]
        out[emb + "position_embeddings.weight"] = positions[: cfg.max_position_embeddings]
        for p in ("weight", "bias"):
            out[f"{emb}norm.{p}"] = take(f"{pre}embeddings.LayerNorm.{p}")
            if kind == "albert" and cfg.embedding_dim != cfg.hidden_size:
                out[f"{emb}projection.{p}"] = take(f"{pre}encoder.embedding_hidden_mapping_in.{p}")
            elif kind == "albert":  # E == H: ours has no projection, so theirs must be the identity
                proj = take(f"{pre}encoder.embedding_hidden_mapping_in.{p}")
                if not torch.equal(proj, torch.eye(cfg.hidden_size) if p == "weight" else torch.zeros(cfg.hidden_size)):
                    raise UserError("ALBERT with embedding_size == hidden_size and a non-identity "
                                    "embedding_hidden_mapping_in cannot be imported exactly")
            if kind == "roberta-prelayernorm":
                out[f"encoder.final_norm.{p}"] = take(f"{pre}LayerNorm.{p}")
        groups = _groups(kind, cfg)
        for i in range(cfg.num_layers):
            names, ours = _layer_names(kind, i * groups // cfg.num_layers), f"encoder.layers.{i}."
            for p in ("weight", "bias"):
                out[f"{ours}attention.qkv.{p}"] = torch.cat([take(f"{pre}{names[q]}.{p}") for q in "qkv"])
                for mine in ("attention.out", "attention_norm", "ffn.up", "ffn.down", "ffn_norm"):
                    out[f"{ours}{mine}.{p}"] = take(f"{pre}{names[mine]}.{p}")
        head = _head_names(kind)
        if f"{head['dense']}.weight" in state:  # a base model (no MLM head) initialises ours afresh
            for p in ("weight", "bias"):
                out[f"objectives.mlm.head.dense.{p}"] = take(f"{head['dense']}.{p}")
                out[f"objectives.mlm.head.norm.{p}"] = take(f"{head['norm']}.{p}")
            bias = state.get(head["bias"], state.get(head["bias"].rsplit(".", 1)[0] + ".decoder.bias"))
            out["objectives.mlm.head.bias"] = bias if bias is not None else take(head["bias"])
            out["objectives.mlm.head.decoder_weight"] = out[emb + "word_embeddings.weight"]
        names = _pair_names(kind)
        if names and f"{names['pooler']}.weight" in state and f"{names['classifier']}.weight" in state:
            for mine, theirs in names.items():
                for p in ("weight", "bias"):
                    out[f"objectives.nsp.head.{mine}.{p}"] = take(f"{theirs}.{p}")
        return out
