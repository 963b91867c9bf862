"""The objective interface, its registry, and selection: which registered objectives a config trains.

An objective declares here, on its class, everything the trainer asks of it: when the config selects it,
the batch keys it reads, whether it wants every layer's output or runs the encoder itself, whether it
scores the canonical MLM evaluation, and any state it carries from one training step to the next.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Optional

from omegaconf import DictConfig
from torch import Tensor, nn

from lightning_bert.config import Config
from lightning_bert.errors import UserError
from lightning_bert.model.encoder import BertEncoder

# objective.* fields whose value is a registered objective's name ("none" = no objective in that slot)
NAMED_BY = ("lm", "sentence")


@dataclass
class ObjectiveOutput:
    loss_sum: Tensor  # scalar: summed over the N predictions (the caller normalises, see PretrainModule)
    preds: Tensor  # [N] predicted classes, for accuracy
    target: Tensor  # [N] true classes

    @property
    def loss(self) -> Tensor:
        """Mean over this batch's predictions."""
        return self.loss_sum / max(len(self.target), 1)


class MicroBatch(dict):
    """One micro-batch's tensors, attention_mask always among them (objectives may count on it), and
    whether it is known to hold no padding (one host sync per step, in pretrain.split_batch): encoders
    then get attention_mask=None and take the fastest kernel without asking the device again."""

    def __init__(self, tensors: dict[str, Tensor], unpadded: bool):
        super().__init__(tensors)
        self.unpadded = unpadded


def encoder_mask(batch: dict[str, Tensor]) -> Optional[Tensor]:
    """The attention mask to hand an encoder: None for a micro-batch known to hold no padding."""
    return None if isinstance(batch, MicroBatch) and batch.unpadded else batch.get("attention_mask")


class Objective(nn.Module):
    """A head on the encoder's hidden states and its loss. Subclasses register with @register(name)."""

    name: ClassVar[str] = ""  # its registry name (set by @register): metric names, state_dict prefix
    num_classes: int  # for the accuracy metric
    weight: float = 1.0  # share of the total loss

    @classmethod
    def selected(cls, cfg: Config) -> bool:
        """Whether `cfg` trains this objective: by default when an objective.{lm, sentence} field names it."""
        return any(getattr(cfg.objective, field) == cls.name for field in NAMED_BY)

    @property
    def needs(self) -> tuple[str, ...]:
        """Batch keys it reads beyond input_ids and attention_mask (checked on every batch it is given)."""
        return ()

    @property
    def needs_layers(self) -> bool:
        """Wants every layer's output ([embeddings, layer 1, ..., layer N]): re-runs layers (DeBERTa's EMD)."""
        return False

    @property
    def runs_encoder(self) -> bool:
        """Runs the encoder itself (XLNet's two streams): it is handed hidden=None."""
        return False

    @property
    def scores_canonical_mlm(self) -> bool:
        """Whether canonical_mlm() is this model's honest score on the shared MLM evaluation set
        (data/canonical.py), logged as eval/mlm_*. When no objective of a run does, it logs no eval/*."""
        return False

    def canonical_mlm(self, hidden: Optional[Tensor], batch: dict[str, Tensor],
                      layers: Optional[list[Tensor]] = None) -> ObjectiveOutput:
        """Vocabulary predictions at the positions batch["mlm_labels"] marks in a canonical batch."""
        raise NotImplementedError(f"{type(self).__name__} does not score the canonical MLM evaluation")

    def step_state(self) -> Optional[Any]:
        """State carried from one training step to the next (e.g. XLNet's memory), saved in the Lightning
        checkpoint (one entry per rank) and handed back by load_step_state on resume. None = stateless;
        every rank answers alike (None on all or on none: saving gathers the ranks' states)."""
        return None

    def load_step_state(self, state: Any) -> None:
        """Restore what step_state() returned. Its tensors arrive on the CPU (Lightning restores before it
        moves the module to its device): move them where they are used."""
        raise NotImplementedError(f"{type(self).__name__} saved step state but cannot load it")

    def forward(self, hidden: Optional[Tensor], batch: dict[str, Tensor],
                layers: Optional[list[Tensor]] = None) -> ObjectiveOutput:
        """hidden: the encoder's last layer [B, L, H]; layers: [embeddings, layer 1, ..., layer N] when
        `needs_layers`. An encoder run here takes encoder_mask(batch) as its attention mask."""
        raise NotImplementedError

    def count(self, batch: dict[str, Tensor]) -> Tensor:
        """The predictions this objective makes on `batch`, known before the forward pass: a whole
        optimizer step's loss is normalised by their total (exact gradient accumulation and DDP)."""
        raise NotImplementedError(f"{type(self).__name__} must say how many predictions a batch holds")


# name -> class, in registration order: the order selected objectives run, sum their losses and log
OBJECTIVES: dict[str, type[Objective]] = {}


def register(name: str) -> Callable[[type[Objective]], type[Objective]]:
    def add(cls: type[Objective]) -> type[Objective]:
        cls.name = name
        OBJECTIVES[name] = cls
        return cls

    return add


def objective_names(cfg: Config | DictConfig) -> list[str]:
    """The registered objectives `cfg` selects; a name in objective.lm / objective.sentence that no
    objective is registered under fails, listing the registered ones."""
    for field in NAMED_BY:
        named = getattr(cfg.objective, field)
        if named != "none" and named not in OBJECTIVES:
            raise UserError(f"objective.{field}={named!r} names no registered objective; "
                            f"registered: {', '.join(sorted(OBJECTIVES))}")
    return [name for name, cls in OBJECTIVES.items() if cls.selected(cfg)]


def build_objectives(cfg: Config | DictConfig, encoder: BertEncoder) -> nn.ModuleDict:
    return nn.ModuleDict({name: OBJECTIVES[name](cfg, encoder) for name in objective_names(cfg)})


def check_batch(objectives: Iterable[Objective], batch: dict[str, Tensor], source: str) -> None:
    """One line naming the objective and the key when `source` (e.g. "the training data") lacks a key an
    objective reads: a dict lookup per objective, no device work."""
    for objective in objectives:
        missing = [key for key in ("input_ids", "attention_mask", *objective.needs) if key not in batch]
        if missing:
            raise UserError(f"objective {objective.name!r} needs batch key {missing[0]!r}, which {source} does not "
                            f"provide (it holds {', '.join(sorted(batch))}); choose data settings that produce it")
