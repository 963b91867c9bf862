"""Prediction heads on top of the encoder's hidden states."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_bert.model.encoder import BertEncoder, build_norm, init_weights


class MLMHead(nn.Module):
    """Transform (dense + GELU + norm) and a decoder tied to the input embeddings. The norm is the
    encoder's kind (model.norm, model.norm_bias); model.head_bias / decoder_bias drop the dense's and the
    decoder's biases (ModernBERT: classifier_bias=false, decoder_bias=true).

    Sparse prediction: vocabulary logits are computed only for the rows it is given, so callers
    pass the hidden states of masked positions only (about 15% of the work of a dense head).
    """

    def __init__(self, encoder: BertEncoder):
        super().__init__()
        cfg = encoder.config
        self.dense = nn.Linear(cfg.hidden_size, cfg.embedding_dim, bias=cfg.head_bias)  # back to E when factorised
        self.norm = build_norm(cfg, cfg.embedding_dim)
        self.apply(init_weights)
        self.decoder_weight = encoder.embeddings.word_embeddings.weight  # tied, not a copy
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size)) if cfg.decoder_bias else None

    def forward(self, hidden: Tensor) -> Tensor:
        return F.linear(self.norm(F.gelu(self.dense(hidden))), self.decoder_weight, self.bias)


class PairHead(nn.Module):
    """BERT's pooler (dense + tanh on [CLS]) and a 2-way classifier, for NSP and SOP."""

    def __init__(self, hidden_size: int, num_classes: int = 2):
        super().__init__()
        self.pooler = nn.Linear(hidden_size, hidden_size)
        self.classifier = nn.Linear(hidden_size, num_classes)
        self.apply(init_weights)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.classifier(self.pooler(hidden[:, 0]).tanh())

