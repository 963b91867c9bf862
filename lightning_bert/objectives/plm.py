"""XLNet's permutation language modelling over the shared encoder's layers, and its tied LM head."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_bert.config import Config
from lightning_bert.model.encoder import BertEncoder, init_weights
from lightning_bert.model.relative import two_stream
from lightning_bert.objectives.registry import Objective, ObjectiveOutput, encoder_mask, register


class TiedDecoder(nn.Module):
    """XLNet's LM head: vocabulary logits through the tied input embeddings plus a bias, no transform
    (projected down to E first when the embeddings are factorised)."""

    def __init__(self, encoder: BertEncoder):
        super().__init__()
        cfg = encoder.config
        self.projection = nn.Linear(cfg.hidden_size, cfg.embedding_dim) if cfg.embedding_dim != cfg.hidden_size \
            else nn.Identity()
        self.apply(init_weights)
        self.decoder_weight = encoder.embeddings.word_embeddings.weight  # tied, not a copy
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, hidden: Tensor) -> Tensor:
        return F.linear(self.projection(hidden), self.decoder_weight, self.bias)


@register("plm")
class PermutationLM(Objective):
    """XLNet's permutation LM with partial prediction: two streams over the shared encoder's layers
    (model/relative.py two_stream), logits only at the targets; batch["plm_order"] from data/permutation.py.
    It has no plain MLM head, so it does not score the canonical MLM evaluation (a PLM run logs no eval/*)."""

    def __init__(self, cfg: Optional[Config], encoder: BertEncoder):
        super().__init__()
        self.__dict__["encoder"] = encoder  # used, not owned: its weights are PretrainModule.encoder's
        self.mask_emb = nn.Parameter(torch.randn(encoder.config.hidden_size) * 0.02)  # the query stream's start
        self.head = TiedDecoder(encoder)
        self.num_classes = encoder.config.vocab_size

    @property
    def needs(self) -> tuple[str, ...]:
        return ("plm_order",)

    @property
    def runs_encoder(self) -> bool:
        return True

    def count(self, batch: dict[str, Tensor]) -> Tensor:
        return (batch["plm_order"] > 0).sum()

    def forward(self, hidden: Optional[Tensor], batch: dict[str, Tensor],
                layers: Optional[list[Tensor]] = None) -> ObjectiveOutput:
        g, positions, valid = two_stream(self.encoder, batch["input_ids"], batch.get("token_type_ids"),
                                         encoder_mask(batch), batch["plm_order"], self.mask_emb)
        logits = self.head(g[valid])
        target = batch["input_ids"].gather(1, positions)[valid]
        return ObjectiveOutput(F.cross_entropy(logits.float(), target, reduction="sum"), logits.argmax(-1), target)
