"""Weight maps between an RTD run (objectives/rtd.py) and transformers' ELECTRA.

- the discriminator (the shared encoder `encoder.*` + `objectives.rtd.head.*`) -> ElectraForPreTraining;
- the generator (`objectives.gen_mlm.generator.*`) -> ElectraForMaskedLM, via `generator_to_hf`;
- with disentangled attention the discriminator goes to DebertaV2Model through hf/deberta.py (transformers
  has no DeBERTa RTD head: the head is dropped), see `deberta_discriminator_to_hf`.
ELECTRA is BERT's layer layout, post-LN, with an optional E -> H projection after the embedding LayerNorm,
as ours. Import reads an ELECTRA discriminator as our encoder (model_type "electra").
transformers is imported only inside hf_config() / generator_hf_config(), never by the maps themselves.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from torch import Tensor

from lightning_bert.errors import UserError
from lightning_bert.hf.adapter import HFAdapter
from lightning_bert.hf.bert import _layer_names
from lightning_bert.hf.deberta import PREFIX as DEBERTA, DebertaV2Adapter
from lightning_bert.model.config import EncoderConfig

DISCRIMINATOR_HEAD = {"dense": "discriminator_predictions.dense", "prediction": "discriminator_predictions.dense_prediction"}
GENERATOR = "objectives.gen_mlm.generator."


def _check(cfg: EncoderConfig) -> None:
    """A one-line UserError for an encoder ELECTRA cannot compute exactly."""
    if cfg.attention != "absolute" or not cfg.position_biased_input:
        raise UserError(f"model.attention={cfg.attention} has no ELECTRA layout (the discriminator exports to "
                        "DebertaV2Model with disentangled attention)")
    if cfg.norm_position != "post" or cfg.share_layers != "none":
        raise UserError("model.norm_position=pre or model.share_layers has no ELECTRA layout (post-LN, unshared)")


def _encoder_names(cfg: EncoderConfig, ours: str) -> dict[str, str]:
    """Our encoder's names under `ours` (e.g. "encoder.") -> ElectraModel's under "electra." (q/k/v: fused in ours)."""
    out = {f"{ours}embeddings.{n}.weight": f"electra.embeddings.{n}.weight"
           for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")}
    for p in ("weight", "bias"):
        out[f"{ours}embeddings.norm.{p}"] = f"electra.embeddings.LayerNorm.{p}"
        if cfg.embedding_dim != cfg.hidden_size:
            out[f"{ours}embeddings.projection.{p}"] = f"electra.embeddings_project.{p}"
        for i in range(cfg.num_layers):
            names = _layer_names("bert", i)
            for mine in ("attention.out", "attention_norm", "ffn.up", "ffn.down", "ffn_norm"):
                out[f"{ours}layers.{i}.{mine}.{p}"] = f"electra.{names[mine]}.{p}"
    return out


def _qkv(state: dict[str, Tensor], cfg: EncoderConfig, ours: str) -> dict[str, Tensor]:
    out = {}
    for i in range(cfg.num_layers):
        names = _layer_names("bert", i)
        for p in ("weight", "bias"):
            for q, tensor in zip("qkv", state[f"{ours}layers.{i}.attention.qkv.{p}"].chunk(3)):
                out[f"electra.{names[q]}.{p}"] = tensor
    return out


def _electra_config(cfg: EncoderConfig, **extra: Any) -> Any:
    import transformers

    return transformers.ElectraConfig(
        vocab_size=cfg.vocab_size, embedding_size=cfg.embedding_dim, hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
        hidden_act="gelu", hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.attention_dropout,
        max_position_embeddings=cfg.max_position_embeddings, type_vocab_size=cfg.type_vocab_size,
        layer_norm_eps=cfg.layer_norm_eps, pad_token_id=cfg.pad_token_id, initializer_range=0.02,
        position_embedding_type="absolute", **extra)


def generator_encoder_config(state: dict[str, Tensor], cfg: EncoderConfig) -> EncoderConfig:
    """The generator's shape, read from its weights in an RTD state dict (so no run config is needed)."""
    qkv = state[f"{GENERATOR}encoder.layers.0.attention.qkv.weight"]
    hidden = qkv.shape[0] // 3
    layers = 1 + max(int(k[len(GENERATOR):].split(".")[2]) for k in state if k.startswith(f"{GENERATOR}encoder.layers."))
    return dataclasses.replace(cfg, hidden_size=hidden, num_heads=hidden // cfg.head_dim, num_layers=layers,
                               intermediate_size=state[f"{GENERATOR}encoder.layers.0.ffn.up.weight"].shape[0],
                               embedding_size=cfg.embedding_dim)


def generator_hf_config(state: dict[str, Tensor], cfg: EncoderConfig, **extra: Any) -> Any:
    """The ElectraConfig of the generator (ElectraForMaskedLM) in an RTD state dict."""
    gen = generator_encoder_config(state, cfg)
    _check(gen)
    return _electra_config(gen, **extra)


def generator_to_hf(state: dict[str, Tensor], cfg: EncoderConfig) -> dict[str, Tensor]:
    """The generator of an RTD state dict -> ElectraForMaskedLM names (its LM head tied to its embeddings)."""
    gen = generator_encoder_config(state, cfg)
    _check(gen)
    ours = f"{GENERATOR}encoder."
    out = {theirs: state[mine] for mine, theirs in _encoder_names(gen, ours).items()} | _qkv(state, gen, ours)
    head = f"{GENERATOR}head."
    for p in ("weight", "bias"):
        out[f"generator_predictions.dense.{p}"] = state[f"{head}dense.{p}"]
        out[f"generator_predictions.LayerNorm.{p}"] = state[f"{head}norm.{p}"]
    out["generator_lm_head.weight"] = state[f"{ours}embeddings.word_embeddings.weight"]
    out["generator_lm_head.bias"] = state[f"{head}bias"]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def deberta_discriminator_to_hf(state: dict[str, Tensor], cfg: EncoderConfig) -> dict[str, Tensor]:
    """A disentangled RTD discriminator -> DebertaV2Model names (the RTD head has no place there)."""
    encoder = {k: v for k, v in state.items() if k.startswith("encoder.")}
    return {k[len(DEBERTA):]: v for k, v in DebertaV2Adapter().to_hf(encoder, cfg).items()}


class DebertaDiscriminatorAdapter(DebertaV2Adapter):
    """A disentangled RTD discriminator as DebertaV2Model (export only; chosen by rtd_exporter)."""

    attentions, model_types, architectures = (), (), ("DebertaV2Model",)

    def architecture(self, cfg: EncoderConfig, state: dict[str, Tensor]) -> str:
        return "DebertaV2Model"

    def to_hf(self, state: dict[str, Tensor], cfg: EncoderConfig) -> dict[str, Tensor]:
        return deberta_discriminator_to_hf(state, cfg)


def rtd_exporter(state: dict[str, Tensor], cfg: EncoderConfig) -> Optional[HFAdapter]:
    """The adapter that exports an RTD checkpoint's discriminator; None for a checkpoint of another objective."""
    if "objectives.rtd.head.dense.weight" not in state:
        return None
    return DebertaDiscriminatorAdapter() if cfg.attention == "disentangled" else ElectraAdapter()


class ElectraAdapter(HFAdapter):
    """ELECTRA's discriminator (ElectraForPreTraining). It exports no attention kind by default (absolute is
    BERT's): an RTD checkpoint chooses it by its objective; it imports model_type "electra"."""

    attentions = ()
    model_types = ("electra",)
    architectures = ("ElectraForPreTraining", "ElectraForMaskedLM")

    def architecture(self, cfg: EncoderConfig, state: dict[str, Tensor]) -> str:
        return "ElectraForPreTraining"

    def hf_config(self, cfg: EncoderConfig, **extra: Any) -> Any:
        _check(cfg)
        return _electra_config(cfg, **extra)

    def to_hf(self, state: dict[str, Tensor], cfg: EncoderConfig) -> dict[str, Tensor]:
        """The discriminator: `encoder.*` and the RTD head -> ElectraForPreTraining names."""
        _check(cfg)
        out = {theirs: state[mine] for mine, theirs in _encoder_names(cfg, "encoder.").items()}
        out |= _qkv(state, cfg, "encoder.")
        for mine, theirs in DISCRIMINATOR_HEAD.items():
            for p in ("weight", "bias"):
                out[f"{theirs}.{p}"] = state[f"objectives.rtd.head.{mine}.{p}"]
        return {k: v.detach().clone().contiguous() for k, v in out.items()}

    def encoder_kwargs(self, hf: dict[str, Any]) -> dict[str, Any]:
        """EncoderConfig fields from an ELECTRA config.json (the discriminator's)."""
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise UserError(f"position_embedding_type={hf['position_embedding_type']} is not supported (absolute only)")
        embedding = hf.get("embedding_size", hf["hidden_size"])
        return dict(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
                    num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
                    dropout=hf.get("hidden_dropout_prob", 0.1),
                    attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
                    type_vocab_size=hf.get("type_vocab_size", 2), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
                    max_position_embeddings=hf.get("max_position_embeddings", 512),
                    embedding_size=None if embedding == hf["hidden_size"] else embedding,
                    share_layers="none", norm_position="post", attention="absolute")

    def from_hf(self, state: dict[str, Tensor], cfg: EncoderConfig) -> dict[str, Tensor]:
        """ElectraModel / ElectraForPreTraining names -> our encoder (the RTD head too when present)."""
        import torch

        if not any(k.startswith("electra.") for k in state):  # a bare ElectraModel saves without the prefix
            state = {"electra." + k: v for k, v in state.items()}
        names = _encoder_names(cfg, "encoder.")
        missing = [theirs for theirs in names.values() if theirs not in state]
        if missing:
            raise UserError(f"weight {missing[0]} is missing from the transformers checkpoint")
        out = {mine: state[theirs] for mine, theirs in names.items()}
        for i in range(cfg.num_layers):
            layer = _layer_names("bert", i)
            for p in ("weight", "bias"):
                out[f"encoder.layers.{i}.attention.qkv.{p}"] = torch.cat([state[f"electra.{layer[q]}.{p}"] for q in "qkv"])
        for mine, theirs in DISCRIMINATOR_HEAD.items():
            for p in ("weight", "bias"):
                if f"{theirs}.{p}" in state:
                    out[f"objectives.rtd.head.{mine}.{p}"] = state[f"{theirs}.{p}"]
        return out
