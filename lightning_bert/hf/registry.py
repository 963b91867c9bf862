"""The transformers architectures we map, one adapter each: export picks one by our attention kind, import by
config.json's model_type. A new architecture is one HFAdapter subclass in its own file, listed here."""
from __future__ import annotations

from typing import Optional

from lightning_bert.errors import UserError
from lightning_bert.hf.adapter import HFAdapter
from lightning_bert.hf.bert import BertFamilyAdapter
from lightning_bert.hf.deberta import DebertaV2Adapter
from lightning_bert.hf.electra import ElectraAdapter
from lightning_bert.hf.xlnet import XLNetAdapter

ADAPTERS: tuple[HFAdapter, ...] = (BertFamilyAdapter(), DebertaV2Adapter(), XLNetAdapter(), ElectraAdapter())
EXPORTS = {kind: adapter for adapter in ADAPTERS for kind in adapter.attentions}  # our attention kind -> adapter
IMPORTS = {mt: adapter for adapter in ADAPTERS for mt in adapter.model_types}  # model_type -> adapter
# each kind and model_type has one adapter: a second claim would silently shadow the first
assert len(EXPORTS) == sum(len(a.attentions) for a in ADAPTERS), "two adapters export one attention kind"
assert len(IMPORTS) == sum(len(a.model_types) for a in ADAPTERS), "two adapters import one model_type"


def exporter(attention: str) -> HFAdapter:
    """The adapter that exports our `attention` kind, or a one-line UserError naming the supported kinds."""
    if attention not in EXPORTS:
        raise UserError(f"model.attention={attention} has no transformers export; supported: {', '.join(EXPORTS)}")
    return EXPORTS[attention]


def importer(model_type: Optional[str], source: str) -> HFAdapter:
    """The adapter that imports a config.json's `model_type`, or a one-line UserError naming the supported ones."""
    if model_type not in IMPORTS:
        raise UserError(f"model.init_from={source}: model_type {model_type!r} is not supported; "
                        f"supported: {', '.join(sorted(IMPORTS))}")
    return IMPORTS[model_type]
