"""Replaced-token detection (ELECTRA, DeBERTa-v3): a small generator trained by MLM corrupts the masked
positions with its own samples, and the shared encoder, as discriminator, tells every real token
replaced or original.

Two objectives, so that each loss is normalised by its own count over the whole step (exact accumulation):
`gen_mlm` (the generator's MLM at the masked positions) and `rtd` (the discriminator over all real tokens,
weight objective.rtd_weight). Both are selected by objective.lm=rtd and share one Generator. gen_mlm runs
first (registration order) and leaves its corrupted sequence in the micro-batch under CORRUPTED for rtd.
Neither scores the canonical MLM evaluation: the generator's MLM is not this model's (the discriminator's)
score, so an RTD run logs no eval/* and ranks on downstream scores, like PLM.
"""
from __future__ import annotations

import dataclasses
import weakref
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_bert.config import Config, ObjectiveConfig
from lightning_bert.data.masking import IGNORE
from lightning_bert.data.tokenizer import CLS_ID, PAD_ID, SEP_ID
from lightning_bert.model.config import EncoderConfig
from lightning_bert.model.encoder import BertEncoder, init_weights
from lightning_bert.model.heads import MLMHead
from lightning_bert.objectives.registry import Objective, ObjectiveOutput, encoder_mask, register

CORRUPTED = "rtd_input_ids"  # micro-batch key gen_mlm writes and rtd reads: the discriminator's input
SHARED_EMBEDDINGS = ("word_embeddings", "position_embeddings", "token_type_embeddings", "norm")  # ELECTRA's tie
GDES_EMBEDDINGS = ("word_embeddings", "position_embeddings")  # DeBERTa-v3: E_D = sg(E_G) + delta
MASK32 = 0xFFFFFFFF


def generator_config(disc: EncoderConfig, objective: ObjectiveConfig) -> EncoderConfig:
    """The generator: the discriminator's attention kind and embedding size (so embeddings can be shared),
    its dims scaled by ObjectiveConfig.generator_dims (the one rule, also counted by train/flops.py)."""
    dims = (disc.num_layers, disc.hidden_size, disc.num_heads, disc.intermediate_size)
    layers, hidden, heads, ffn = ObjectiveConfig.generator_dims(objective, dims)
    return dataclasses.replace(disc, num_layers=layers, hidden_size=hidden, num_heads=heads, intermediate_size=ffn,
                               embedding_size=disc.embedding_dim, share_layers="none")


def real_tokens(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """[B, L] bool: the tokens the discriminator judges (not padding, [CLS] or [SEP])."""
    return attention_mask.bool() & (input_ids != CLS_ID) & (input_ids != SEP_ID) & (input_ids != PAD_ID)


def _mix(x: Tensor) -> Tensor:
    """A 32-bit integer hash (int64 arithmetic kept below 2^63), elementwise on the device."""
    for _ in range(2):
        x = ((x >> 16) ^ x) * 0x45D9F3B & MASK32
    return (x >> 16) ^ x


def uniforms(salt: int, input_ids: Tensor, rows: Tensor, positions: Tensor) -> Tensor:
    """[M] uniform draws in (0, 1) for the masked positions (rows, positions) of `input_ids`: a hash of (salt,
    the example's tokens, the position), so an example draws the same samples whatever micro-batch it sits
    in (exact accumulation) and a resumed step repeats its draws (salt = the step seed)."""
    weights = (torch.arange(input_ids.shape[1], device=input_ids.device) * 0x27D4EB2F + 0x165667B1) & MASK32
    fingerprint = _mix(((input_ids.long() * weights) & MASK32).sum(1) & MASK32)  # [B], one per example
    bits = _mix(_mix((salt + (fingerprint[rows] * 0x9E3779B1 & MASK32) + (positions.long() * 0x85EBCA77 & MASK32))
                     & MASK32))
    return ((bits >> 8).float() + 0.5) * 2.0 ** -24  # 24 bits: exact in float32, never 0 or 1


class Generator(nn.Module):
    """The generator encoder and its MLM head; its embeddings tied to the discriminator's (ELECTRA), or
    its own (none, gdes: then they start as a copy of the discriminator's, so delta starts at zero)."""

    def __init__(self, cfg: Config, encoder: BertEncoder):
        super().__init__()
        o = cfg.objective
        self.encoder = BertEncoder(generator_config(encoder.config, o))
        mine, theirs = self.encoder.embeddings, encoder.embeddings
        if o.rtd_sharing == "tied":
            for name in SHARED_EMBEDDINGS:
                setattr(mine, name, getattr(theirs, name))
        elif o.rtd_sharing == "gdes":
            with torch.no_grad():
                for name in GDES_EMBEDDINGS:
                    if getattr(mine, name) is not None:
                        getattr(mine, name).weight.copy_(getattr(theirs, name).weight)
        self.head = MLMHead(self.encoder)  # decoder tied to the generator's word embeddings

    def forward(self, batch: dict[str, Tensor], selected: Tensor) -> Tensor:
        """Vocabulary logits [M, V] at the selected (masked) positions: sparse prediction."""
        hidden = self.encoder(batch["input_ids"], batch.get("token_type_ids"), encoder_mask(batch))
        return self.head(hidden[selected])


def corrupt(batch: dict[str, Tensor], selected: Tensor, logits: Tensor) -> Tensor:
    """The original sequence with each selected position replaced by a detached draw from the generator's
    distribution there (inverse CDF: one hashed uniform per position, no [M, V] noise); the salt is the
    step seed PretrainModule.training_step sets from (seed, step, rank)."""
    rows, positions = selected.nonzero(as_tuple=True)
    u = uniforms(torch.initial_seed() & MASK32, batch["input_ids"], rows, positions)
    cdf = logits.detach().float().softmax(-1).cumsum(-1)
    samples = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).squeeze(-1).clamp(max=logits.shape[-1] - 1)
    original = torch.where(selected, batch["mlm_labels"], batch["input_ids"])
    return original.masked_scatter(selected, samples)


# encoder -> its Generator: both objectives of one model find the same one (objectives are built one by one)
_GENERATORS: "weakref.WeakKeyDictionary[BertEncoder, Generator]" = weakref.WeakKeyDictionary()


def shared_generator(cfg: Config, encoder: BertEncoder) -> Generator:
    if encoder not in _GENERATORS:
        _GENERATORS[encoder] = Generator(cfg, encoder)
    return _GENERATORS[encoder]


def is_rtd(cfg: Config) -> bool:
    return cfg.objective.lm == "rtd"


class RTDPart(Objective):
    """What the generator's MLM and the discriminator share: both run under objective.lm=rtd, read the
    masked labels, and run their encoders themselves."""

    @classmethod
    def selected(cls, cfg: Config) -> bool:
        return is_rtd(cfg)

    @property
    def needs(self) -> tuple[str, ...]:
        return ("mlm_labels",)

    @property
    def runs_encoder(self) -> bool:
        return True


@register("gen_mlm")
class GeneratorMLM(RTDPart):
    """The generator's MLM loss at the masked positions; it leaves the corrupted sequence (masked positions
    replaced by detached samples from its distribution) in batch[CORRUPTED] for the discriminator."""

    def __init__(self, cfg: Config, encoder: BertEncoder):
        super().__init__()
        self.generator = shared_generator(cfg, encoder)
        self.num_classes = encoder.config.vocab_size

    def count(self, batch: dict[str, Tensor]) -> Tensor:
        return (batch["mlm_labels"] != IGNORE).sum()

    def forward(self, hidden: Optional[Tensor], batch: dict[str, Tensor],
                layers: Optional[list[Tensor]] = None) -> ObjectiveOutput:
        labels = batch["mlm_labels"]
        selected = labels != IGNORE
        logits = self.generator(batch, selected)
        target = labels[selected]
        batch[CORRUPTED] = corrupt(batch, selected, logits)
        return ObjectiveOutput(F.cross_entropy(logits.float(), target, reduction="sum"), logits.argmax(-1), target)


class DiscriminatorHead(nn.Module):
    """ELECTRA's per-token head: dense + GELU + one logit (replaced)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.prediction = nn.Linear(hidden_size, 1)
        self.apply(init_weights)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.prediction(F.gelu(self.dense(hidden))).squeeze(-1)


@register("rtd")
class ReplacedTokenDetection(RTDPart):
    """The shared encoder as discriminator on batch[CORRUPTED]: per real token, replaced (1) or original (0);
    a sample equal to the original is original. Under gdes its word (and input position) embeddings are
    the generator's, gradient stopped, plus a delta of its own started at zero; the encoder's own weights
    hold that sum whenever the model is saved, so `encoder.*` is the discriminator as trained."""

    def __init__(self, cfg: Config, encoder: BertEncoder):
        super().__init__()
        self.__dict__["encoder"] = encoder  # used, not owned: its weights are PretrainModule.encoder's
        self.__dict__["generator"] = shared_generator(cfg, encoder)  # owned by gen_mlm
        self.head = DiscriminatorHead(encoder.config.hidden_size)
        self.num_classes = 2
        self.weight = float(cfg.objective.rtd_weight)
        self.gdes = cfg.objective.rtd_sharing == "gdes"
        if self.gdes:
            mine = encoder.embeddings
            self.deltas = nn.ParameterDict({name: nn.Parameter(torch.zeros_like(getattr(mine, name).weight))
                                            for name in GDES_EMBEDDINGS if getattr(mine, name) is not None})
            for name in self.deltas:  # trained through the delta only: no stale gradient or decay on it
                getattr(mine, name).weight.requires_grad_(False)
            encoder.register_state_dict_pre_hook(lambda *_: self._fold())

    def gdes_weights(self) -> dict[str, Tensor]:
        """encoder parameter name -> E_G.detach() + delta."""
        gen = self.generator.encoder.embeddings
        return {f"embeddings.{name}.weight": getattr(gen, name).weight.detach() + delta
                for name, delta in self.deltas.items()}

    @torch.no_grad()
    def _fold(self) -> None:
        for name, value in self.gdes_weights().items():
            self.encoder.get_parameter(name).copy_(value)

    def count(self, batch: dict[str, Tensor]) -> Tensor:
        return real_tokens(batch["input_ids"], batch["attention_mask"]).sum()

    def forward(self, hidden: Optional[Tensor], batch: dict[str, Tensor],
                layers: Optional[list[Tensor]] = None) -> ObjectiveOutput:
        if CORRUPTED not in batch:  # run alone (gen_mlm, registered first, normally leaves it): draw it here
            selected = batch["mlm_labels"] != IGNORE
            with torch.no_grad():
                batch[CORRUPTED] = corrupt(batch, selected, self.generator(batch, selected))
        corrupted = batch[CORRUPTED]
        args = (corrupted, batch.get("token_type_ids"), encoder_mask(batch))
        if self.gdes:
            hidden = torch.func.functional_call(self.encoder, self.gdes_weights(), args, strict=False)
        else:
            hidden = self.encoder(*args)
        judged = real_tokens(batch["input_ids"], batch["attention_mask"])
        original = torch.where(batch["mlm_labels"] != IGNORE, batch["mlm_labels"], batch["input_ids"])
        target = (corrupted != original)[judged].long()
        logits = self.head(hidden[judged]).float()
        loss = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="sum")
        return ObjectiveOutput(loss, (logits > 0).long(), target)
