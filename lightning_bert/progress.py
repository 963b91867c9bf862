"""The pretraining progress bar: steps toward the budget, not epochs or logger versions."""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import _RICH_AVAILABLE, RichProgressBar

TRAIN_DESCRIPTION = "pretraining"


class _StepsNotEpochs:
    """Pretraining stops at max_steps or max_tokens (max_epochs=-1), so Lightning's "Epoch 0/-2" is noise,
    and v_num is the W&B id fragment, which says nothing about training."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)  # type: ignore[misc]
        items.pop("v_num", None)
        return items


class RichPretrainBar(_StepsNotEpochs, RichProgressBar):
    def _get_train_description(self, current_epoch: int) -> str:
        return f"{TRAIN_DESCRIPTION:{len(self.validation_description)}}"  # padded: no flicker beside "Validation"


class TQDMPretrainBar(_StepsNotEpochs, TQDMProgressBar):
    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(TRAIN_DESCRIPTION)


def pretrain_progress_bar() -> pl.Callback:
    """The bar Lightning would pick (Rich when installed, else tqdm), labelled for a step-budgeted run."""
    return RichPretrainBar() if _RICH_AVAILABLE else TQDMPretrainBar()
