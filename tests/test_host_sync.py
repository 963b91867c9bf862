"""No host sync in a steady-state training step: every read of a tensor's value on the host (item, bool, int,
float, tolist, cpu) is counted from one batch's start to the next, through the real Trainer with its logger
run record and progress bar; only logging steps may read (there Lightning writes the values)."""
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger

from lightning_bert.config import load, to_dict
from lightning_bert.data.datamodule import PretrainDataModule
from lightning_bert.train.pretrain import PretrainModule
from lightning_bert.train.progress import pretrain_progress_bar
from lightning_bert.train.runrecord import RunRecorder

READS = ("item", "__bool__", "__int__", "__float__", "tolist", "cpu")
# Reads that are no device sync anywhere: AdamW keeps its step counters on the host (unless fused/capturable).
HOST_RESIDENT = ("torch/optim/",)


@contextmanager
def counting_reads(counts: list[str]) -> Iterator[None]:
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name: str, original: Any) -> Any:
        def read(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            frame = sys._getframe(1)
            if not any(part in frame.f_code.co_filename for part in HOST_RESIDENT):
                counts.append(f"{name} at {Path(frame.f_code.co_filename).name}:{frame.f_lineno}")
            return original(self, *args, **kwargs)
        return read

    for name, original in originals.items():
        setattr(torch.Tensor, name, wrap(name, original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


class ReadsPerBatch(pl.Callback):
    """The reads between one batch's start and the next (the step, every hook, the logger, the bar)."""

    def __init__(self) -> None:
        self.counts: list[str] = []
        self.per_batch: list[list[str]] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self.per_batch.append(self.counts[:])
        self.counts.clear()


def reads_per_step(overrides: list[str], tmp_path: Path, steps: int, log_every: int) -> list[list[str]]:
    cfg = load(overrides)
    data = PretrainDataModule(cfg)
    data.setup()
    module = PretrainModule(to_dict(cfg), data.vocab_size)
    counter = ReadsPerBatch()
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=CSVLogger(tmp_path),
                         log_every_n_steps=log_every, enable_checkpointing=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0, use_distributed_sampler=False,
                         callbacks=[counter, RunRecorder(tmp_path / "run", cfg), pretrain_progress_bar()])
    with counting_reads(counter.counts):
        trainer.fit(module, datamodule=data)
    return counter.per_batch[1:]  # [i] = reads of step i (0-based); the first entry is setup


def test_a_training_step_reads_nothing_from_the_device_outside_logging_steps(tiny_overrides: list[str],
                                                                             tmp_path: Path) -> None:
    per_step = reads_per_step(tiny_overrides, tmp_path, 7, 3)  # packed batches (sentence=none)
    # steps 3 and 6 (1-based) log; step 7 is the last, which logs too; the rest must not read
    quiet = [reads for i, reads in enumerate(per_step[:6]) if (i + 1) % 3]
    assert quiet and all(r == [] for r in quiet), quiet
    assert per_step[2], "a logging step reads its values: the counter sees reads"


def test_padded_pair_batches_read_only_in_the_attention_mask_check(tiny_overrides: list[str], tmp_path: Path) -> None:
    """Known left: model/attention.py padding_mask asks the device whether a padded micro-batch is padded
    (one read per padded micro-batch; the step already knows it from HostFacts)."""
    per_step = reads_per_step(tiny_overrides + ["objective.sentence=nsp"], tmp_path, 4, 3)
    quiet = [reads for i, reads in enumerate(per_step[:3]) if (i + 1) % 3]
    assert all(x.startswith("__bool__ at attention.py") for r in quiet for x in r), quiet  # none if unpadded
