"""Position schemes: one registry, name -> module built once per encoder and shared by all layers.

`scheme(input_ids, token_type_ids, attention_mask) -> context`, handed to every attention layer.
Absolute positions need no context: they are added to the input embeddings (model/encoder.py).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from torch import Tensor, nn

from lightning_bert.model.config import EncoderConfig

POSITIONS: dict[str, type[nn.Module]] = {}


def register_positions(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def add(cls: type[nn.Module]) -> type[nn.Module]:
        POSITIONS[name] = cls
        return cls

    return add


@register_positions("none")
class NoPositionContext(nn.Module):
    """Absolute attention: nothing to compute per forward."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor], attention_mask: Optional[Tensor]) -> Any:
        return None
