"""PretrainModule: the shared encoder + a set of objectives, trained by Lightning."""
from __future__ import annotations

import math
import time
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lightning_bert.checkpoint import encoder_config
from lightning_bert.model.encoder import BertEncoder
from lightning_bert.objectives import build_objectives


def lr_lambda(warmup: int, total: int, schedule: str, min_ratio: float):
    """Linear warmup to the peak, then linear / cosine decay to min_ratio (or constant)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        decay = 1 - progress if schedule == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
        return min_ratio + (1 - min_ratio) * decay

    return factor


class PretrainModule(pl.LightningModule):
    def __init__(self, config: dict[str, Any], vocab_size: int, tokenizer_json: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["tokenizer_json"])
        cfg = DictConfig(config)
        self.cfg = cfg
        self.tokenizer_json = tokenizer_json
        self.encoder = BertEncoder(encoder_config(cfg, vocab_size))
        self.objectives = build_objectives(cfg, self.encoder)
        self.train_metrics, self.val_metrics = self._stage_metrics(), self._stage_metrics()
        self.register_buffer("tokens_seen", torch.zeros((), dtype=torch.long))  # checkpointed with the model
        self._window_start, self._window_tokens = time.perf_counter(), 0

    def _stage_metrics(self) -> nn.ModuleDict:
        metrics = {}
        for name, objective in self.objectives.items():
            metrics[f"{name}_acc"] = MulticlassAccuracy(objective.num_classes, average="micro", validate_args=False)
            metrics[f"{name}_loss"] = MeanMetric()
        return nn.ModuleDict(metrics)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.encoder(batch["input_ids"], batch.get("token_type_ids"), batch.get("attention_mask"))

    def encode(self, batch: dict[str, Tensor]) -> tuple[Tensor | None, list[Tensor] | None]:
        """(last hidden states, every layer's output) as the objectives need them: layers only for those
        that re-run layers (EMD); nothing when every objective runs the encoder itself (PLM)."""
        if all(o.runs_encoder for o in self.objectives.values()):
            return None, None
        if any(o.needs_layers for o in self.objectives.values()):
            layers = self.encoder(batch["input_ids"], batch.get("token_type_ids"), batch.get("attention_mask"),
                                  output_layers=True)
            return layers[-1], layers
        return self(batch), None

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        hidden, layers = self.encode(batch)
        metrics, total = getattr(self, f"{stage}_metrics"), 0.0
        on_step = stage == "train"
        for name, objective in self.objectives.items():
            out = objective(hidden, batch, layers)
            total = total + objective.weight * out.loss_sum / self._loss_denominator(len(out.target), stage)
            metrics[f"{name}_acc"](out.preds, out.target)  # forward: updates state and gives the batch value
            metrics[f"{name}_loss"](out.loss.detach(), weight=len(out.target))
            self.log(f"{stage}/{name}_acc", metrics[f"{name}_acc"], on_step=on_step, on_epoch=not on_step)
            self.log(f"{stage}/{name}_loss", metrics[f"{name}_loss"], on_step=on_step, on_epoch=not on_step)
        self.log(f"{stage}/loss", total, on_step=on_step, on_epoch=not on_step, prog_bar=True,
                 sync_dist=not on_step, batch_size=len(batch["input_ids"]))
        return total

    def _loss_denominator(self, count: int, stage: str) -> Tensor | int:
        """Predictions per rank, averaged over ranks: DDP then averages gradients of sum / that, which
        equals the gradient of the global-batch mean, so N processes train exactly like one."""
        world = self.trainer.world_size if self._trainer is not None else 1
        if stage != "train" or world == 1:
            return max(count, 1)
        total = torch.tensor(float(count), device=self.device)
        torch.distributed.all_reduce(total)
        return (total / world).clamp(min=1)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        tokens = int(self.trainer.strategy.reduce(batch["attention_mask"].sum(), reduce_op="sum"))  # all ranks
        self.tokens_seen += tokens
        self._window_tokens += tokens
        loss = self._shared_step(batch, "train")
        self.log("tokens_seen", self.tokens_seen.float(), on_step=True, on_epoch=False)
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            now = time.perf_counter()
            self.log("train/tokens_per_sec", self._window_tokens / (now - self._window_start), on_step=True)
            self._window_start, self._window_tokens = now, 0
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0], on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self.log("val/perplexity", torch.exp(self.val_metrics["mlm_loss"].compute().clamp(max=50)))
        self.log("tokens_seen", self.tokens_seen.float())  # the x axis of validation curves

    def on_train_start(self) -> None:
        self._window_start, self._window_tokens = time.perf_counter(), 0  # not counting data and model setup

    def on_train_epoch_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:  # dynamic masks are a function of (seed, epoch, example)
            datamodule.set_epoch(self.current_epoch)

    def configure_optimizers(self) -> Any:
        optim = self.cfg.optim
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            (no_decay if param.ndim < 2 or "norm" in name else decay).append(param)
        groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps)
        total = self.trainer.max_steps
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(optim.warmup_steps, total, optim.schedule, optim.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tokenizer"] = self.tokenizer_json  # a checkpoint is self-contained for fine-tuning

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.tokenizer_json = checkpoint.get("tokenizer", self.tokenizer_json)

