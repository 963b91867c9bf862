"""The pretraining progress bar: the epoch, and the step toward the budget, without logger versions."""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import _RICH_AVAILABLE, RichProgressBar


def train_description(epoch: int) -> str:
    return f"pretraining, epoch {epoch}"


class _StepsNotEpochs:
    """Pretraining stops at max_steps or max_tokens (max_epochs=-1): Lightning's "Epoch 0/-2" is noise and its
    bar counts one epoch's batches, so the run's own progress goes beside the losses as `step: N/max`. v_num is
    the W&B id fragment, which says nothing about training."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)  # type: ignore[misc]
        items.pop("v_num", None)
        items.update(getattr(pl_module, "bar_values", {}))  # host floats: the bar reads no device tensor
        if trainer.max_steps > 0:
            items["step"] = f"{trainer.global_step}/{trainer.max_steps}"
        return items


class RichPretrainBar(_StepsNotEpochs, RichProgressBar):
    def _get_train_description(self, current_epoch: int) -> str:
        text = train_description(current_epoch)
        return f"{text:{len(self.validation_description)}}"  # padded: no flicker beside "Validation"


class TQDMPretrainBar(_StepsNotEpochs, TQDMProgressBar):
    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(train_description(trainer.current_epoch))


def pretrain_progress_bar() -> pl.Callback:
    """The bar Lightning would pick (Rich when installed, else tqdm), labelled for a step-budgeted run."""
    return RichPretrainBar() if _RICH_AVAILABLE else TQDMPretrainBar()
