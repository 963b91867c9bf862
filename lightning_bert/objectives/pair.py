"""Sentence-pair tasks on the pooled [CLS]: BERT's next sentence prediction and ALBERT's sentence order prediction."""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor

from lightning_bert.config import Config
from lightning_bert.model.encoder import BertEncoder
from lightning_bert.model.heads import PairHead
from lightning_bert.objectives.registry import Objective, ObjectiveOutput, register


class SentencePair(Objective):
    """A 2-way classifier on the pooled [CLS]: NSP (is B the next segment?) or SOP (are A, B swapped?)."""

    def __init__(self, cfg: Config, encoder: BertEncoder):
        super().__init__()
        self.head = PairHead(encoder.config.hidden_size)
        self.num_classes = 2
        self.weight = cfg.objective.sentence_weight

    @property
    def needs(self) -> tuple[str, ...]:
        return ("sentence_label",)

    def count(self, batch: dict[str, Tensor]) -> Tensor:
        return batch["sentence_label"].new_tensor(batch["sentence_label"].numel())

    def forward(self, hidden: Tensor, batch: dict[str, Tensor],
                layers: Optional[list[Tensor]] = None) -> ObjectiveOutput:
        logits = self.head(hidden)
        target = batch["sentence_label"]
        return ObjectiveOutput(F.cross_entropy(logits.float(), target, reduction="sum"), logits.argmax(-1), target)


@register("nsp")
class NextSentencePrediction(SentencePair):
    """BERT: label 1 = segment B comes from another document."""


@register("sop")
class SentenceOrderPrediction(SentencePair):
    """ALBERT: label 1 = the two consecutive segments are swapped."""
