"""The interface every transformers architecture implements: its config mapping and its weight maps, both ways.

An adapter is stateless; hf/registry.py lists one instance per architecture and picks the adapter that
`exports(cfg)` (our attention kind and position scheme) or imports config.json's model_type. transformers is imported lazily, inside
hf_config() only: the core training path imports the adapters (model.init_from) but never transformers.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Optional

from torch import Tensor

from lightning_bert.config import ATTENTION_KINDS
from lightning_bert.errors import UserError
from lightning_bert.model.config import EncoderConfig

PAIR_HEADS = ("nsp", "sop")  # our sentence-pair objectives, each with a pooler + classifier head


def pair_head(state: dict[str, Tensor]) -> Optional[str]:
    """The pair objective whose head a PretrainModule state dict holds, if any."""
    return next((n for n in PAIR_HEADS if f"objectives.{n}.head.pooler.weight" in state), None)


class HFAdapter(ABC):
    """One transformers architecture family; export: our config + state -> theirs, import: theirs -> ours."""

    attentions: ClassVar[tuple[str, ...]]  # our model.attention kinds it exports
    positions: ClassVar[Optional[tuple[str, ...]]] = None  # the position schemes it exports; None = each kind's default
    model_types: ClassVar[tuple[str, ...]]  # the config.json model_type values it imports
    architectures: ClassVar[tuple[str, ...]]  # the transformers classes export may write
    import_notice: ClassVar[Optional[str]] = None  # warned on import where outputs are close, not equal
    input_names: ClassVar[tuple[str, ...]] = ("input_ids", "token_type_ids", "attention_mask")  # its tokenizer's outputs

    def schemes(self) -> tuple[str, ...]:
        """The model.positions schemes it exports (with any of its attention kinds)."""
        return self.positions or tuple(ATTENTION_KINDS[kind][0] for kind in self.attentions)

    def exports(self, cfg: EncoderConfig) -> bool:
        """Whether this adapter is the one that exports `cfg` (BERT: learned positions, ModernBERT: RoPE); it may
        still refuse an option of `cfg` in one line (hf_config, to_hf)."""
        return cfg.attention in self.attentions and cfg.positions in self.schemes()

    @abstractmethod
    def architecture(self, cfg: EncoderConfig, state: dict[str, Tensor]) -> str:
        """The transformers class (one of `architectures`) that holds `cfg` and the heads in `state`."""

    @abstractmethod
    def hf_config(self, cfg: EncoderConfig, **extra: Any) -> Any:
        """The transformers PretrainedConfig that computes what `cfg` does (a one-line UserError where none
        does); `extra` (e.g. architectures=[...]) is passed through."""

    @abstractmethod
    def to_hf(self, state: dict[str, Tensor], cfg: EncoderConfig) -> dict[str, Tensor]:
        """Our PretrainModule state dict -> transformers names (heads transformers has no place for dropped)."""

    @abstractmethod
    def encoder_kwargs(self, hf: dict[str, Any]) -> dict[str, Any]:
        """EncoderConfig fields from a config.json (a plain dict, no transformers), every field the
        directory decides included, even at its default (export.init_from checks overrides against them)."""

    @abstractmethod
    def from_hf(self, state: dict[str, Tensor], cfg: EncoderConfig) -> dict[str, Tensor]:
        """transformers names -> ours (the inverse of to_hf); a bare base model imports its encoder only."""


def rename_from_hf(state: dict[str, Tensor], names: dict[str, str], prefix: str) -> dict[str, Tensor]:
    """transformers names -> ours by a name table (ours -> theirs). A bare base model saves without the
    model prefix; its missing MLM head leaves ours to a fresh init, any other missing weight is an error."""
    if not any(k.startswith(prefix) for k in state):
        state = {prefix + k: v for k, v in state.items()}
    out = {}
    for mine, theirs in names.items():
        if theirs in state:
            out[mine] = state[theirs]
        elif not mine.startswith("objectives."):
            raise UserError(f"weight {theirs} is missing from the transformers checkpoint")
    return out
