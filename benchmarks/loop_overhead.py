"""Loop overhead: train.py's step (PretrainModule under the Lightning Trainer, with train.py's logger,
run record and progress bar) against a plain PyTorch loop on the same model and the same batches, in one
process. Both loops see pre-collated batches, so data loading is not in either figure.

    PYTHONPATH=. python benchmarks/loop_overhead.py [--steps 60] [--repeats 3] [overrides ...]

Defaults: model.size=tiny (the default model), batch 8, sequence 128, one CPU thread.

Last line: `loop overhead: X%`: the mean step time under Lightning (batch start to batch start: the step,
every hook, the logger, the bar; logging steps included) over the raw loop's, minus 1, the median of the
repeats. Steps over 3x the median are dropped in both: on a shared machine another process's burst lands
in a few steps and would swamp a 3% difference.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from lightning_bert.config import load, to_dict
from lightning_bert.data.datamodule import PretrainDataModule
from lightning_bert.train.optim import build_optimizer
from lightning_bert.train.pretrain import PretrainModule
from lightning_bert.train.progress import pretrain_progress_bar
from lightning_bert.train.runrecord import ResumableCSVLogger, RunRecorder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikipedia-en" / "valid.txt"
WARMUP = 5  # steps before the clock starts, in both loops


def typical_mean(times: list[float]) -> float:
    """Mean step time without the bursts (over 3x the median) that other processes cause."""
    median = statistics.median(times)
    return statistics.mean(t for t in times if t <= 3 * median)


class Clock(pl.Callback):
    """Each step's wall time, batch start to batch start (the last step: to the end of training)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, *args: Any) -> None:
        self.starts.append(time.perf_counter())
        self.steps = [b - a for a, b in zip(self.starts, self.starts[1:])][WARMUP:]


def lightning_step_seconds(cfg: Any, vocab: int, batches: list[dict], run_dir: Path) -> float:
    torch.manual_seed(0)
    module = PretrainModule(to_dict(cfg), vocab)
    clock = Clock()
    trainer = pl.Trainer(max_steps=len(batches), accelerator="cpu", devices=1, logger=[ResumableCSVLogger(run_dir)],
                         log_every_n_steps=cfg.trainer.log_every_n_steps, enable_checkpointing=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                         use_distributed_sampler=False, callbacks=[clock, RunRecorder(run_dir, cfg),
                                                                   pretrain_progress_bar()])
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    trainer.fit(module, train_dataloaders=loader)
    return typical_mean(clock.steps)


def raw_step_seconds(cfg: Any, vocab: int, batches: list[dict]) -> float:
    """The same work written plainly: forward, loss normalised by the prediction count, backward, clip, AdamW
    and schedule step; no logging, no hooks."""
    torch.manual_seed(0)
    module = PretrainModule(to_dict(cfg), vocab).train()
    recipe = build_optimizer(module, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.warmup_steps, len(batches))
    optimizer, schedule = recipe["optimizer"], recipe["lr_scheduler"]["scheduler"]
    masks = [None if bool(b["attention_mask"].all()) else b["attention_mask"] for b in batches]  # known up front
    times = []
    for step, (batch, mask) in enumerate(zip(batches, masks)):
        start = time.perf_counter()
        torch.manual_seed(step)
        hidden = module.encoder(batch["input_ids"], batch.get("token_type_ids"), mask)
        loss = sum(o.weight * o(hidden, batch).loss_sum / o.count(batch).clamp(min=1) for o in module.objectives.values())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.trainer.gradient_clip_val or float("inf"))
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return typical_mean(times[WARMUP:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(1)  # steadier figures on a shared machine; both loops alike
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load([f"data.path={DATA}", "data.max_documents=300", f"data.cache_dir={tmp}/cache",
                    "logger.wandb.mode=disabled", "trainer.batch_size=8", "data.max_seq_length=128", *args.overrides])
        data = PretrainDataModule(cfg)
        data.setup("fit")
        batches = []
        while len(batches) < args.steps + WARMUP:  # packed rows: the default (sentence=none) carry no padding
            batches += [b for b in data.train_dataloader()][: args.steps + WARMUP - len(batches)]
        ratios = []
        for r in range(args.repeats):  # alternate, so drift in the machine's load hits both
            raw = raw_step_seconds(cfg, data.vocab_size, batches)
            lit = lightning_step_seconds(cfg, data.vocab_size, batches, Path(tmp) / f"run{r}")
            ratios.append(lit / raw - 1)
            print(f"repeat {r}: raw loop {raw * 1e3:.2f} ms/step, train.py step {lit * 1e3:.2f} ms/step, "
                  f"overhead {ratios[-1]:+.1%}", flush=True)
    print(f"model.size={cfg.model.size} batch {cfg.trainer.batch_size} seq {cfg.data.max_seq_length}, "
          f"{args.steps} timed steps x {args.repeats}")
    print(f"loop overhead: {statistics.median(ratios):.1%}")


if __name__ == "__main__":
    main()
