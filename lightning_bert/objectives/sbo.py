"""SpanBERT's span boundary objective."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_bert.config import Config
from lightning_bert.model.encoder import BertEncoder
from lightning_bert.model.heads import MLMHead
from lightning_bert.objectives.registry import Objective, ObjectiveOutput, register


@register("sbo")
class SpanBoundary(Objective):
    """SpanBERT's span boundary objective: predict each span token from the encoder outputs just
    outside the span plus its relative position, through a 2-layer GELU + LayerNorm network."""

    def __init__(self, cfg: Config, encoder: BertEncoder):
        super().__init__()
        hidden = encoder.config.hidden_size
        self.position = nn.Embedding(cfg.data.max_seq_length, hidden)
        self.mlp = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.GELU(), nn.LayerNorm(hidden),
                                 nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden))
        self.decoder = MLMHead(encoder)  # vocabulary logits through the tied input embeddings
        self.num_classes = encoder.config.vocab_size

    @classmethod
    def selected(cls, cfg: Config) -> bool:
        return bool(cfg.objective.sbo)  # on top of MLM (the schema requires masking.unit=span)

    @property
    def needs(self) -> tuple[str, ...]:
        return ("mlm_labels", "sbo_left", "sbo_right")

    def count(self, batch: dict[str, Tensor]) -> Tensor:
        return (batch["sbo_left"] >= 0).sum()

    def forward(self, hidden: Tensor, batch: dict[str, Tensor],
                layers: Optional[list[Tensor]] = None) -> ObjectiveOutput:
        left, right = batch["sbo_left"], batch["sbo_right"]
        rows, cols = torch.nonzero(left >= 0, as_tuple=True)
        left, right = left[rows, cols], right[rows, cols]
        features = torch.cat([hidden[rows, left], hidden[rows, right], self.position(cols - left - 1)], dim=-1)
        logits = self.decoder(self.mlp(features))
        target = batch["mlm_labels"][rows, cols]
        return ObjectiveOutput(F.cross_entropy(logits.float(), target, reduction="sum"), logits.argmax(-1), target)
