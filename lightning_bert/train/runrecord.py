"""The local run record: config.yaml, metrics.csv (Lightning's CSVLogger) and summary.json.

W&B offline runs keep no summary file, so this record is what reports and sweeps read.
Only global rank 0 writes it.
"""
from __future__ import annotations

import csv
import io
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

from lightning_bert.analysis.runs import complete_rows
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
    """Lightning's metrics.csv writer, continued on resume and crash-safe: each row goes out in one write and
    is flushed, and a new header replaces the file atomically (Lightning truncates and rewrites it in place)."""

    def _check_log_dir_exists(self) -> None:
        # Lightning deletes an existing metrics.csv here; a resumed run appends to it instead, after its
        # complete rows (a row torn by a kill would glue onto the next one).
        if os.path.isfile(self.metrics_file_path):
            self.metrics_keys, rows, torn = complete_rows(Path(self.metrics_file_path))
            if torn:
                _replace_rows(Path(self.metrics_file_path), self.metrics_keys, rows)

    def save(self) -> None:
        if not self.metrics:
            return
        path = Path(self.metrics_file_path)
        if self._record_new_keys() or not path.is_file():
            old = complete_rows(path)[1] if path.is_file() else []
            _replace_rows(path, self.metrics_keys, old + self.metrics)
        else:
            with open(path, "a", newline="") as file:
                for row in self.metrics:
                    file.write(_csv_text(self.metrics_keys, [row], header=False))
                    file.flush()
        self.metrics = []


def _csv_text(fields: list[str], rows: list[dict[str, Any]], header: bool = True) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, restval="")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _replace_rows(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    """Rewrite metrics.csv atomically: a crash leaves the old file or the new one, whole."""
    atomic_write_text(path, _csv_text(fields, rows))


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
    fields, rows, _ = complete_rows(path)
    _replace_rows(path, fields, [row for row in rows if int(float(row["step"])) < from_step])


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for name, value in metrics.items():
        value = float(value)
        if math.isfinite(value):
            out[name] = value
    return out
