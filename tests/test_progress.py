"""The pretraining bar shows the epoch and the step toward the budget, without "Epoch 0/-2" or the logger version."""
import lightning.pytorch as pl
import pytest
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import CSVLogger

from lightning_bert.train.progress import RichPretrainBar, TQDMPretrainBar, pretrain_progress_bar


def _fit(bar: pl.Callback, tmp_path) -> pl.Trainer:
    trainer = pl.Trainer(max_steps=7, limit_train_batches=3, callbacks=[bar], logger=CSVLogger(tmp_path), enable_checkpointing=False,
                         enable_model_summary=False, limit_val_batches=0, accelerator="cpu")
    trainer.fit(BoringModel())
    return trainer


def test_tqdm_bar_shows_steps_not_epochs_or_version(tmp_path):
    bar = TQDMPretrainBar()
    trainer = _fit(bar, tmp_path)
    assert trainer.max_epochs == -1  # the case that printed "Epoch 0/-2"
    assert bar.train_progress_bar.desc.startswith("pretraining, epoch 2")  # 3 batches an epoch: the third epoch
    metrics = bar.get_metrics(trainer, trainer.lightning_module)
    assert "v_num" not in metrics and metrics["step"] == "7/7"
    assert "v_num" in pl.callbacks.TQDMProgressBar().get_metrics(trainer, trainer.lightning_module)  # what it hides


def test_rich_bar_shows_steps_not_epochs_or_version(tmp_path):
    pytest.importorskip("rich")
    bar = RichPretrainBar()
    trainer = _fit(bar, tmp_path)
    description = bar._get_train_description(2)
    assert description.strip() == "pretraining, epoch 2" and "/" not in description
    metrics = bar.get_metrics(trainer, trainer.lightning_module)
    assert "v_num" not in metrics and metrics["step"] == "7/7"


def test_fit_uses_the_pretraining_bar():
    assert isinstance(pretrain_progress_bar(), (RichPretrainBar, TQDMPretrainBar))
