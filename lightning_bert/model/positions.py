"""Position schemes: one registry, name -> module built once per encoder and shared by all layers.

Each name is declared, with what the config and FLOP count need to know, in config.POSITION_SCHEMES;
the attention kinds that accept it in config.ATTENTION_KINDS.

`scheme(input_ids, token_type_ids, attention_mask) -> context`, handed to every attention layer.
Absolute positions need no context: they are added to the input embeddings (model/encoder.py).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from torch import Tensor, nn

from lightning_bert.config import POSITION_SCHEMES
from lightning_bert.model.config import EncoderConfig
from lightning_bert.model.registry import Registry

POSITIONS = Registry("model.positions")


def register_positions(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Register a position scheme under `name`, which config.POSITION_SCHEMES declares."""
    if name not in POSITION_SCHEMES:
        raise KeyError(f"position scheme {name!r} is not declared in lightning_bert/config.py POSITION_SCHEMES")
    return POSITIONS.register(name)


@register_positions("absolute")
class AbsoluteInputPositions(nn.Module):
    """Learned absolute positions: the table is added at the input (model/encoder.py Embeddings), so
    there is nothing to compute per forward."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor], attention_mask: Optional[Tensor]) -> Any:
        return None
