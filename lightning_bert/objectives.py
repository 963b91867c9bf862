"""Pretraining objectives: a registry name -> (batch keys it needs, head, loss, predictions for metrics).

Adding an objective = one decorated class here; the encoder, data files and trainer stay untouched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from lightning_bert.data.masking import IGNORE  # label of positions that are not predicted
from lightning_bert.errors import UserError
from lightning_bert.model.disentangled import EnhancedMaskDecoder
from lightning_bert.model.encoder import BertEncoder, init_weights
from lightning_bert.model.heads import MLMHead, PairHead
from lightning_bert.model.relative import two_stream



@dataclass
class ObjectiveOutput:
    loss_sum: Tensor  # scalar: summed over the N predictions (the caller normalises, see PretrainModule)
    preds: Tensor  # [N] predicted classes, for accuracy
    target: Tensor  # [N] true classes

    @property
    def loss(self) -> Tensor:
        """Mean over this batch's predictions."""
        return self.loss_sum / max(len(self.target), 1)


class Objective(nn.Module):
    """A head on the encoder's hidden states and its loss."""

    needs: ClassVar[tuple[str, ...]] = ()  # batch keys the data pipeline must provide
    needs_layers: ClassVar[bool] = False  # wants every layer's output (re-runs layers: DeBERTa's EMD)
    runs_encoder: ClassVar[bool] = False  # runs the encoder itself (XLNet's two streams): hidden is None
    num_classes: int  # for the accuracy metric
    weight: float = 1.0  # share of the total loss

    def forward(self, hidden: Optional[Tensor], batch: dict[str, Tensor],
                layers: Optional[list[Tensor]] = None) -> ObjectiveOutput:
        """hidden: the encoder's last layer [B, L, H]; layers: [embeddings, layer 1, ..., layer N] when
        `needs_layers`."""
        raise NotImplementedError

    def count(self, batch: dict[str, Tensor]) -> Tensor:
        """The predictions this objective makes on `batch`, known before the forward pass: a whole
        optimizer step's loss is normalised by their total (exact gradient accumulation and DDP)."""
        raise NotImplementedError(f"{type(self).__name__} must say how many predictions a batch holds")


OBJECTIVES: dict[str, type[Objective]] = {}


def register(name: str) -> Callable[[type[Objective]], type[Objective]]:
    def add(cls: type[Objective]) -> type[Objective]:
        OBJECTIVES[name] = cls
        return cls

    return add


@register("mlm")
class MaskedLM(Objective):
    """Masked language modelling with sparse prediction: logits only at selected positions."""

    needs = ("mlm_labels",)

    def __init__(self, cfg: DictConfig, encoder: BertEncoder):
        super().__init__()
        self.head = MLMHead(encoder)
        self.num_classes = encoder.config.vocab_size
        # DeBERTa's EMD decodes the masked rows from the second-to-last layer; same metric name "mlm"
        self.emd = EnhancedMaskDecoder(encoder) if cfg.objective.get("emd", False) else None
        self.needs_layers = self.emd is not None

    def count(self, batch: dict[str, Tensor]) -> Tensor:
        return (batch["mlm_labels"] != IGNORE).sum()

    def forward(self, hidden: Tensor, batch: dict[str, Tensor],
                layers: Optional[list[Tensor]] = None) -> ObjectiveOutput:
        labels = batch["mlm_labels"]
        selected = labels != IGNORE
        if self.emd is None:
            rows = hidden[selected]
        else:
            rows = self.emd(layers, selected, batch["input_ids"], batch.get("token_type_ids"),
                            batch.get("attention_mask"))
        logits = self.head(rows)
        target = labels[selected]
        return ObjectiveOutput(F.cross_entropy(logits.float(), target, reduction="sum"), logits.argmax(-1), target)


class SentencePair(Objective):
    """A 2-way classifier on the pooled [CLS]: NSP (is B the next segment?) or SOP (are A, B swapped?)."""

    needs = ("sentence_label",)

    def __init__(self, cfg: DictConfig, encoder: BertEncoder):
        super().__init__()
        self.head = PairHead(encoder.config.hidden_size)
        self.num_classes = 2
        self.weight = cfg.objective.sentence_weight

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


@register("sbo")
class SpanBoundary(Objective):
    """SpanBERT's span boundary objective: predict each span token from the encoder outputs just
    outside the span plus its relative position, through a 2-layer GELU + LayerNorm network."""

    needs = ("mlm_labels", "sbo_left", "sbo_right")

    def __init__(self, cfg: DictConfig, encoder: BertEncoder):
        super().__init__()
        hidden = encoder.config.hidden_size
        self.position = nn.Embedding(cfg.data.max_seq_length, hidden)
        self.mlp = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.GELU(), nn.LayerNorm(hidden),
                                 nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden))
        self.decoder = MLMHead(encoder)  # vocabulary logits through the tied input embeddings
        self.num_classes = encoder.config.vocab_size

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
    (model/relative.py two_stream), logits only at the targets; batch["plm_order"] from data/permutation.py."""

    needs = ("plm_order",)
    runs_encoder = True

    def __init__(self, cfg: DictConfig, encoder: BertEncoder):
        super().__init__()
        self.__dict__["encoder"] = encoder  # used, not owned: its weights are PretrainModule.encoder's
        self.mask_emb = nn.Parameter(torch.randn(encoder.config.hidden_size) * 0.02)  # the query stream's start
        self.head = TiedDecoder(encoder)
        self.num_classes = encoder.config.vocab_size

    def count(self, batch: dict[str, Tensor]) -> Tensor:
        return (batch["plm_order"] > 0).sum()

    def forward(self, hidden: Optional[Tensor], batch: dict[str, Tensor],
                layers: Optional[list[Tensor]] = None) -> ObjectiveOutput:
        g, positions, valid = two_stream(self.encoder, batch["input_ids"], batch.get("token_type_ids"),
                                         batch.get("attention_mask"), batch["plm_order"], self.mask_emb)
        logits = self.head(g[valid])
        target = batch["input_ids"].gather(1, positions)[valid]
        return ObjectiveOutput(F.cross_entropy(logits.float(), target, reduction="sum"), logits.argmax(-1), target)


def objective_names(cfg: DictConfig) -> list[str]:
    """The objectives a config trains: MLM (or XLNet's PLM), plus the sentence task and SBO when chosen."""
    names = ["plm" if cfg.objective.get("lm", "mlm") == "plm" else "mlm"]
    if cfg.objective.sentence != "none":
        names.append(cfg.objective.sentence)
    if cfg.objective.sbo:
        names.append("sbo")
    return names


def build_objectives(cfg: DictConfig, encoder: BertEncoder) -> nn.ModuleDict:
    unknown = [n for n in objective_names(cfg) if n not in OBJECTIVES]
    if unknown:
        raise UserError(f"unknown objective {unknown[0]!r}; registered: {', '.join(sorted(OBJECTIVES))}")
    return nn.ModuleDict({name: OBJECTIVES[name](cfg, encoder) for name in objective_names(cfg)})
