"""Masked language modelling (BERT, RoBERTa, ALBERT, SpanBERT), with DeBERTa's enhanced mask decoder as an option."""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor

from lightning_bert.config import Config
from lightning_bert.data.masking import IGNORE  # label of positions that are not predicted
from lightning_bert.model.disentangled import EnhancedMaskDecoder
from lightning_bert.model.encoder import BertEncoder
from lightning_bert.model.heads import MLMHead
from lightning_bert.objectives.registry import Objective, ObjectiveOutput, encoder_mask, register


@register("mlm")
class MaskedLM(Objective):
    """Masked language modelling with sparse prediction: logits only at selected positions."""

    def __init__(self, cfg: Config, encoder: BertEncoder):
        super().__init__()
        self.head = MLMHead(encoder)
        self.num_classes = encoder.config.vocab_size
        # DeBERTa's EMD decodes the masked rows from the second-to-last layer; same metric name "mlm"
        self.emd = EnhancedMaskDecoder(encoder) if cfg.objective.emd else None

    @property
    def needs(self) -> tuple[str, ...]:
        return ("mlm_labels",)

    @property
    def needs_layers(self) -> bool:
        return self.emd is not None

    @property
    def scores_canonical_mlm(self) -> bool:
        return True  # its own task: the canonical set is MLM with fixed masks

    def canonical_mlm(self, hidden: Optional[Tensor], batch: dict[str, Tensor],
                      layers: Optional[list[Tensor]] = None) -> ObjectiveOutput:
        return self(hidden, batch, layers)

    def count(self, batch: dict[str, Tensor]) -> Tensor:
        return (batch["mlm_labels"] != IGNORE).sum()

    def forward(self, hidden: Tensor, batch: dict[str, Tensor],
                layers: Optional[list[Tensor]] = None) -> ObjectiveOutput:
        labels = batch["mlm_labels"]
        selected = labels != IGNORE
        if self.emd is None:
            rows = hidden[selected]
        else:
            rows = self.emd(layers, selected, batch["input_ids"], batch.get("token_type_ids"), encoder_mask(batch),
                            batch.get("position_ids"), batch.get("document_ids"))
        logits = self.head(rows)
        target = labels[selected]
        return ObjectiveOutput(F.cross_entropy(logits.float(), target, reduction="sum"), logits.argmax(-1), target)
