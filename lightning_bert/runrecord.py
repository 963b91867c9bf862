"""The local run record: config.yaml, metrics.csv (Lightning's CSVLogger) and summary.json.

W&B offline runs keep no summary file, so this record is what reports and sweeps read.
Only global rank 0 writes it.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

LOWER_IS_BETTER = ("loss", "perplexity")


def _is_better(name: str, new: float, old: float) -> bool:
    return new < old if any(k in name for k in LOWER_IS_BETTER) else new > old


class RunRecord(pl.Callback):
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
        self.tokens_seen, self.global_step = int(pl_module.tokens_seen), trainer.global_step

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        status = "interrupted" if isinstance(exception, KeyboardInterrupt) else "failed"
        self.write(status, _scalars(trainer.callback_metrics), error=f"{type(exception).__name__}: {exception}")

    @rank_zero_only
    def write(self, status: str, metrics: dict[str, float], error: str | None = None) -> dict[str, Any]:
        summary = {"status": status, "metrics": metrics, "best": self.best, "tokens_seen": self.tokens_seen,
                   "global_step": self.global_step, "wall_time_s": round(time.time() - self.started, 2),
                   "run_dir": str(self.run_dir), "wandb": self.wandb}
        if error:
            summary["error"] = error
        tmp = self.run_dir / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True))
        os.replace(tmp, self.run_dir / "summary.json")
        return summary


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for name, value in metrics.items():
        value = float(value)
        if math.isfinite(value):
            out[name] = value
    return out
