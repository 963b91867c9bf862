"""The transformers architectures we map, one adapter each: export picks the one that `exports(cfg)` (attention
kind and position scheme), import the one for config.json's model_type. A new architecture is one HFAdapter
subclass in its own file, listed here."""
from __future__ import annotations

from typing import Optional

from lightning_bert.errors import UserError
from lightning_bert.hf.adapter import HFAdapter
from lightning_bert.hf.bert import BertFamilyAdapter
from lightning_bert.hf.deberta import DebertaV2Adapter
from lightning_bert.hf.electra import ElectraAdapter
from lightning_bert.hf.modernbert import ModernBertAdapter
from lightning_bert.hf.xlnet import XLNetAdapter
from lightning_bert.model.config import EncoderConfig

ADAPTERS: tuple[HFAdapter, ...] = (BertFamilyAdapter(), DebertaV2Adapter(), XLNetAdapter(), ModernBertAdapter(),
                                   ElectraAdapter())
IMPORTS = {mt: adapter for adapter in ADAPTERS for mt in adapter.model_types}  # model_type -> adapter
EXPORTED = [(kind, scheme) for adapter in ADAPTERS for kind in adapter.attentions for scheme in adapter.schemes()]
# each (attention kind, position scheme) and model_type has one adapter: a second claim would shadow the first
assert len(set(EXPORTED)) == len(EXPORTED), "two adapters export one attention kind with one position scheme"
assert len(IMPORTS) == sum(len(a.model_types) for a in ADAPTERS), "two adapters import one model_type"


def exporter(cfg: EncoderConfig) -> HFAdapter:
    """The adapter that exports `cfg`, or a one-line UserError naming the supported kinds (or schemes)."""
    found = [adapter for adapter in ADAPTERS if adapter.exports(cfg)]
    if found:
        return found[0]
    kinds = dict.fromkeys(kind for kind, _ in EXPORTED)
    if cfg.attention not in kinds:
        raise UserError(f"model.attention={cfg.attention} has no transformers export; supported: {', '.join(kinds)}")
    schemes = [scheme for kind, scheme in EXPORTED if kind == cfg.attention]
    raise UserError(f"model.positions={cfg.positions} has no transformers export with model.attention={cfg.attention}; "
                    f"supported: {', '.join(schemes)}")


def importer(model_type: Optional[str], source: str) -> HFAdapter:
    """The adapter that imports a config.json's `model_type`, or a one-line UserError naming the supported ones."""
    if model_type not in IMPORTS:
        raise UserError(f"model.init_from={source}: model_type {model_type!r} is not supported; "
                        f"supported: {', '.join(sorted(IMPORTS))}")
    return IMPORTS[model_type]
