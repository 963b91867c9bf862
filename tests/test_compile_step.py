"""trainer.compile compiles the whole micro-batch step (encoder, MLM head, loss) and trains as eager does."""
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from lightning_bert.config import load, to_dict
from lightning_bert.data.datamodule import PretrainDataModule
from lightning_bert.train.pretrain import PretrainModule


class StepLosses(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        self.losses.append(pl_module.bar_values["train/loss"])  # every step logs (log_every_n_steps=1)


def losses(overrides: list[str], compiled: bool) -> tuple[list[float], PretrainModule]:
    cfg = load(overrides + [f"trainer.compile={str(compiled).lower()}"])
    data = PretrainDataModule(cfg)
    data.setup()
    torch.manual_seed(0)
    module = PretrainModule(to_dict(cfg), data.vocab_size)
    seen = StepLosses()
    pl.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=False, log_every_n_steps=1,
               enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
               num_sanity_val_steps=0, limit_val_batches=0, use_distributed_sampler=False,
               callbacks=[seen]).fit(module, datamodule=data)
    return seen.losses, module


@pytest.mark.slow  # Inductor compiles forward and backward on the CPU: about a minute
def test_the_compiled_step_matches_eager_losses(tiny_overrides: list[str], tmp_path: Path) -> None:
    exact = tiny_overrides + ["model.dropout=0", "model.attention_dropout=0", "model.num_layers=1"]
    eager, _ = losses(exact, compiled=False)
    compiled, module = losses(exact, compiled=True)
    assert module._micro_step != module._micro_loss  # the compiled wrapper, not the bound method
    assert len(eager) == 3 and eager[0] != eager[2]  # it trains
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(eager), rtol=1e-5, atol=1e-5)
