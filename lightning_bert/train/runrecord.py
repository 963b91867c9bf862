"""The local run record: config.yaml, metrics.csv (Lightning's CSVLogger) and summary.json.

W&B offline runs keep no summary file, so this record is what reports and sweeps read.
Only global rank 0 writes it.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from lightning_bert.train.durable import CannotWrite, atomic_write_text

log = logging.getLogger(__name__)
LOWER_IS_BETTER = ("loss", "perplexity")


def _is_better(name: str, new: float, old: float) -> bool:
    return new < old if any(k in name for k in LOWER_IS_BETTER) else new > old


class RunRecorder(pl.Callback):
    """Writes the run record while training (analysis/runs.py reads it back as RecordedRun)."""

    def __init__(self, run_dir: Path, cfg: DictConfig):
        self.run_dir, self.cfg = run_dir, cfg
        self.best: dict[str, float] = {}
        self.started = time.time()
        self.tokens_seen, self.global_step = 0, 0
        self.wandb: dict[str, Any] = {}

    @rank_zero_only
    def write_config(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.cfg, self.run_dir / "config.yaml", resolve=True)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for name, value in _scalars(trainer.callback_metrics).items():
            if name.startswith("val/") and (name not in self.best or _is_better(name, value, self.best[name])):
                self.best[name] = value

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.tokens_seen, self.global_step = pl_module.host_tokens_seen, trainer.global_step  # no device read

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        diverged = type(exception).__name__ == "Diverged"  # pretrain.Diverged; no import of the model here
        status = "interrupted" if isinstance(exception, KeyboardInterrupt) else "diverged" if diverged else "failed"
        self.write(status, _scalars(trainer.callback_metrics), error=f"{type(exception).__name__}: {exception}")
        if trainer.is_global_zero:
            log.warning("%s at step %d; continue with: python train.py <same overrides> run.name=%s run.resume=auto",
                        status, trainer.global_step, self.run_dir.name)

    @rank_zero_only
    def write(self, status: str, metrics: dict[str, float], error: str | None = None) -> dict[str, Any]:
        summary = {"status": status, "metrics": metrics, "best": self.best, "tokens_seen": self.tokens_seen,
                   "global_step": self.global_step, "wall_time_s": round(time.time() - self.started, 2),
                   "run_dir": str(self.run_dir), "wandb": self.wandb}
        if error:
            summary["error"] = error
        try:  # durable and whole; a full disk must not hide the error being recorded
            atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2, sort_keys=True))
        except CannotWrite as err:
            log.warning("the run record is not updated: %s", err)
        return summary


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Lightning deletes an existing metrics.csv here; a resumed run appends to it instead.
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])


class ResumableCSVLogger(CSVLogger):
    """CSVLogger writing <run dir>/metrics.csv, continued (not replaced) when a run resumes."""

    def __init__(self, run_dir: Path):
        # Rows reach the disk every step: a killed run loses none of the steps its checkpoint holds.
        super().__init__(str(run_dir), name="", version="", flush_logs_every_n_steps=1)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


@rank_zero_only
def trim_metrics(path: Path, from_step: int) -> None:
    """Drop rows logged after the checkpoint we resume from: those steps are trained again. (The
    checkpoint of step k is written before step k's validation; a run killed inside that validation
    has no row for it, and the resumed run does not repeat it.)"""
    if not path.is_file():
        return

    def kept(row: dict[str, str]) -> bool:
        return int(row["step"]) < from_step

    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        fields, rows = reader.fieldnames or [], [r for r in reader if kept(r)]
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for name, value in metrics.items():
        value = float(value)
        if math.isfinite(value):
            out[name] = value
    return out
