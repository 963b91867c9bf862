"""PretrainModule: the shared encoder + a set of objectives, trained by Lightning."""
from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from typing import Any

import lightning.pytorch as pl
import torch
from lightning_utilities.core.apply_func import apply_to_collection
from omegaconf import OmegaConf
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lightning_bert import config as schema
from lightning_bert.train.checkpoint import encoder_config
from lightning_bert.errors import Diverged, UserError
from lightning_bert.train.flops import device_peak_flops, training_flops_per_token
from lightning_bert.model.encoder import BertEncoder
from lightning_bert.objectives import MicroBatch, Objective, build_objectives, check_batch, encoder_mask
from lightning_bert.train.optim import build_optimizer

log = logging.getLogger(__name__)

OBJECTIVE_STATE = "objective_state"  # checkpoint key: per rank, {objective name: its step_state()}


def packing(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The document-masked packing keys to hand the encoder (data.pack_attention=document): position_ids
    and document_ids where the batch has them, else nothing (one sequence per row)."""
    return {key: batch[key] for key in ("position_ids", "document_ids") if key in batch}


def split_batch(batch: dict[str, Tensor], size: int) -> list[MicroBatch]:
    """One optimizer step's batch -> micro-batches of `size` examples, each knowing whether it holds
    padding: the encoder then skips the mask of an unpadded one and takes the fastest attention kernel
    without asking the device (one host sync per step here instead of one per micro-batch in the encoder)."""
    count = len(batch["input_ids"])
    padded = (batch["attention_mask"] == 0).any(dim=1).tolist()
    return [MicroBatch({k: v[i:i + size] for k, v in batch.items()}, unpadded=not any(padded[i:i + size]))
            for i in range(0, count, size)]


class PretrainModule(pl.LightningModule):
    """Manual optimisation, so that a step's loss is normalised by the prediction count of the whole
    step (every micro-batch on every rank) before any backward pass: k micro-batches of b then give
    the same update as one batch of k*b, and N ranks the same as one process. Lightning still runs the
    loop, DDP, precision and checkpoints."""

    def __init__(self, config: dict[str, Any], vocab_size: int, tokenizer_json: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["tokenizer_json"])
        validated = schema.load(base=config)  # keys an older checkpoint predates take the schema's defaults
        self.cfg: schema.Config = OmegaConf.to_object(validated)  # type: ignore[assignment]
        self.automatic_optimization = False
        self.tokenizer_json = tokenizer_json
        self.encoder = BertEncoder(encoder_config(validated, vocab_size))
        self.objectives = build_objectives(self.cfg, self.encoder)
        self.val_metrics = self._stage_metrics()
        self.eval_metrics = nn.ModuleDict({"loss": MeanMetric(), "loss_per_char": MeanMetric(),
                                           "acc": MulticlassAccuracy(vocab_size, average="micro", validate_args=False)})
        self.register_buffer("tokens_seen", torch.zeros((), dtype=torch.long))  # checkpointed with the model
        self.register_buffer("skipped_steps", torch.zeros((), dtype=torch.long))  # non-finite steps skipped
        self.schedule_steps: int | None = None  # LR schedule length (fit sets it for token budgets)
        self._window_start, self._window_tokens = time.perf_counter(), torch.zeros((), dtype=torch.long)
        self._canonical: list[dict[str, Tensor]] | None = None
        self._flops_per_token, self._peak_flops = 0.0, None

    def _stage_metrics(self) -> nn.ModuleDict:
        metrics = {}
        for name, objective in self.objectives.items():
            metrics[f"{name}_acc"] = MulticlassAccuracy(objective.num_classes, average="micro", validate_args=False)
            metrics[f"{name}_loss"] = MeanMetric()
        return nn.ModuleDict(metrics)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.encoder(batch["input_ids"], batch.get("token_type_ids"), encoder_mask(batch), **packing(batch))

    def encode(self, batch: dict[str, Tensor], among: list[Objective] | None = None
               ) -> tuple[Tensor | None, list[Tensor] | None]:
        """(last hidden states, every layer's output) as the objectives (default: all) need them: layers
        only for those that re-run layers (EMD); nothing when each runs the encoder itself (PLM)."""
        objectives = among if among is not None else list(self.objectives.values())
        if all(o.runs_encoder for o in objectives):
            return None, None
        if any(o.needs_layers for o in objectives):
            layers = self.encoder(batch["input_ids"], batch.get("token_type_ids"), encoder_mask(batch),
                                  output_layers=True, **packing(batch))
            return layers[-1], layers
        return self(batch), None

    def _outputs(self, batch: dict[str, Tensor]) -> dict[str, Any]:
        hidden, layers = self.encode(batch)
        return {name: objective(hidden, batch, layers) for name, objective in self.objectives.items()}

    # ---- training -------------------------------------------------------------------------------
    def _denominators(self, micro: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Per objective: predictions in this step over all micro-batches and ranks, divided by the
        number of ranks (DDP averages gradients, so each rank divides by the global mean count)."""
        counts = torch.stack([sum(o.count(b) for b in micro) for o in self.objectives.values()]).float()
        world = self.trainer.world_size
        if world > 1:
            torch.distributed.all_reduce(counts)
            counts = counts / world
        return dict(zip(self.objectives, counts.clamp(min=1)))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        t = self.cfg.trainer
        # Dropout draws are a function of (seed, step, rank), like masks: a resumed run repeats them.
        torch.manual_seed(hash((int(self.cfg.run.seed), self.global_step, self.global_rank)) % (2 ** 63))
        check_batch(self.objectives.values(), batch, "the training data")
        micro = split_batch(batch, t.batch_size)
        denominators = self._denominators(micro)
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        sums = {name: torch.zeros(3, device=self.device) for name in self.objectives}  # loss, correct, count
        step_loss = torch.zeros((), device=self.device)
        for i, part in enumerate(micro):
            with self._gradient_sync(i == len(micro) - 1):
                outputs = self._outputs(part)
                loss = sum(self.objectives[n].weight * out.loss_sum / denominators[n] for n, out in outputs.items())
                self.manual_backward(loss)
            step_loss += loss.detach()
            for name, out in outputs.items():
                sums[name] += torch.stack([out.loss_sum.detach(), (out.preds == out.target).sum(),
                                           out.target.new_tensor(len(out.target))]).float()
        grad_norm = self._clip_gradients(optimizer, t.gradient_clip_val)
        if self._nonfinite(step_loss, grad_norm, sums):
            optimizer.zero_grad()
            return
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        self._log_step(batch, step_loss, grad_norm, sums)

    def _gradient_sync(self, sync: bool) -> Any:
        """DDP all-reduces gradients on the last micro-batch of a step only."""
        block = getattr(self.trainer.strategy, "block_backward_sync", None)
        return nullcontext() if sync or block is None else block()

    def _clip_gradients(self, optimizer: Any, max_norm: float) -> Tensor:
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None:  # 16-mixed: clip the true gradients
            scaler.unscale_(optimizer.optimizer)
        params = [p for p in self.parameters() if p.grad is not None]
        return torch.nn.utils.clip_grad_norm_(params, max_norm or float("inf"))

    def _nonfinite(self, step_loss: Tensor, grad_norm: Tensor, sums: dict[str, Tensor]) -> bool:
        """The divergence guard (one host sync per step): skip up to trainer.skip_nonfinite bad steps,
        then stop with the step and the loss that went bad."""
        bad = (~torch.isfinite(step_loss) | ~torch.isfinite(grad_norm)).float()
        if self.trainer.world_size > 1:  # every rank takes the same decision
            bad = self.trainer.strategy.reduce(bad, reduce_op="sum")
        if not bool(bad > 0):
            return False
        self.skipped_steps += 1
        if int(self.skipped_steps) <= self.cfg.trainer.skip_nonfinite:
            log.warning("step %d: non-finite loss or gradient, skipped (%d of %d allowed)", self.global_step,
                        int(self.skipped_steps), self.cfg.trainer.skip_nonfinite)
            return True
        losses = {f"train/{n}_loss": float(v[0] / v[2].clamp(min=1)) for n, v in sums.items()}
        culprit = next((k for k, v in losses.items() if not math.isfinite(v)), f"gradient norm={float(grad_norm)}")
        raise Diverged(f"diverged at step {self.global_step}: {culprit}"
                       + (f"={losses[culprit]}" if culprit in losses else ""))

    def _log_step(self, batch: dict[str, Tensor], step_loss: Tensor, grad_norm: Tensor,
                  sums: dict[str, Tensor]) -> None:
        tokens = batch["attention_mask"].sum()
        if self.trainer.world_size > 1:
            tokens = self.trainer.strategy.reduce(tokens, reduce_op="sum")
        self.tokens_seen += tokens
        self._window_tokens = self._window_tokens.to(tokens.device) + tokens
        for name, (loss_sum, correct, count) in sums.items():
            self.log(f"train/{name}_loss", loss_sum / count.clamp(min=1), on_step=True)
            self.log(f"train/{name}_acc", correct / count.clamp(min=1), on_step=True)
        self.log("train/loss", step_loss, on_step=True, prog_bar=True)
        self.log("train/grad_norm", grad_norm, on_step=True)
        self.log("tokens_seen", self.tokens_seen.float(), on_step=True)
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0], on_step=True)
        if self.global_step % self.trainer.log_every_n_steps == 0:  # real tokens per second, all ranks
            now = time.perf_counter()
            rate = self._window_tokens.float() / (now - self._window_start)
            self.log("train/tokens_per_sec", rate, on_step=True)
            if self._peak_flops:  # against the peak of every device in the run
                self.log("train/mfu", rate * self._flops_per_token / (self._peak_flops * self.trainer.world_size),
                         on_step=True)
            self._window_start, self._window_tokens = now, torch.zeros_like(self._window_tokens)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Stop at the token budget; either way the last step validates (Lightning validates when asked
        to stop), so every summary holds metrics from exactly the final weights."""
        budget = self.cfg.trainer.max_tokens
        if (budget is not None and int(self.tokens_seen) >= budget) or self.global_step >= self.trainer.max_steps:
            self.trainer.should_stop = True

    # ---- validation -----------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        check_batch(self.objectives.values(), batch, "the validation data")
        for name, out in self._outputs(batch).items():
            self.val_metrics[f"{name}_acc"].update(out.preds, out.target)
            self.val_metrics[f"{name}_loss"].update(out.loss_sum / max(len(out.target), 1), weight=len(out.target))

    def on_validation_epoch_end(self) -> None:
        values = {name: metric.compute() for name, metric in self.val_metrics.items()}
        # torchmetrics' compute() already gathered every rank: sync_dist only confirms equal values
        for name, metric in self.val_metrics.items():
            self.log(f"val/{name}", values[name], sync_dist=True)
            metric.reset()
        self.log("val/loss", sum(o.weight * values[f"{n}_loss"] for n, o in self.objectives.items()), prog_bar=True,
                 sync_dist=True)
        lm = "plm_loss" if "plm_loss" in values else "mlm_loss"  # XLNet: perplexity of its targets
        if lm in values:
            self.log("val/perplexity", torch.exp(values[lm].clamp(max=50)), sync_dist=True)
        self._canonical_evaluation()
        self.log("tokens_seen", self.tokens_seen.float(), sync_dist=True)  # the x axis of validation curves

    def _canonical_evaluation(self) -> None:
        """eval/*: MLM on the fixed held-out set every variant shares (data/canonical.py), sharded over ranks,
        scored by the objective that declares it can (none for PLM: such a run logs no eval/*)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        scorer = next((o for o in self.objectives.values() if o.scores_canonical_mlm), None)
        if scorer is None or datamodule is None or datamodule.canonical_set is None:
            return
        if self._canonical is None:
            self._canonical = list(datamodule.canonical_loader())
        m = self.eval_metrics
        with torch.no_grad():
            for cpu_batch in self._canonical:
                batch = {k: v.to(self.device) for k, v in cpu_batch.items()}
                check_batch([scorer], batch, "the canonical evaluation set")
                hidden, layers = self.encode(batch, among=[scorer])
                out = scorer.canonical_mlm(hidden, batch, layers)
                count, chars = len(out.target), batch["mlm_chars"].sum()
                if count == 0:
                    continue
                m["acc"].update(out.preds, out.target)
                m["loss"].update(out.loss_sum / max(count, 1), weight=count)
                m["loss_per_char"].update(out.loss_sum / chars.clamp(min=1), weight=chars)
        for name, metric in m.items():
            self.log(f"eval/mlm_{name}", metric.compute(), sync_dist=True)
            metric.reset()

    def on_train_start(self) -> None:
        self._window_start = time.perf_counter()  # not counting data and model setup
        t = self.cfg.trainer
        self._flops_per_token = training_flops_per_token(self.cfg, self.encoder.config.vocab_size)
        self._peak_flops = device_peak_flops(t.precision, t.peak_flops) if self.device.type != "cpu" \
            else t.peak_flops

    def configure_model(self) -> None:
        """trainer.compile: torch.compile the encoder's layers (fewer, fused kernels on GPU)."""
        if self.cfg.trainer.compile and not getattr(self, "_compiled", False):
            self.encoder.compile()
            self._compiled = True

    def on_train_epoch_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:  # dynamic masks are a function of (seed, epoch, example)
            datamodule.set_epoch(self.current_epoch)

    def configure_optimizers(self) -> Any:
        optim = self.cfg.optim
        return build_optimizer(self, optim.lr, optim.weight_decay, optim.warmup_steps,
                               self.schedule_steps or self.trainer.max_steps, optim.schedule, optim.min_lr_ratio,
                               betas=(optim.beta1, optim.beta2), eps=optim.eps)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tokenizer"] = self.tokenizer_json  # a checkpoint is self-contained for fine-tuning
        states = {name: o.step_state() for name, o in self.objectives.items()}
        states = {name: state for name, state in states.items() if state is not None}
        if states:  # every rank saves (Lightning dumps on all ranks and writes rank 0's): stateless runs skip this
            checkpoint[OBJECTIVE_STATE] = self._every_rank(states)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.tokenizer_json = checkpoint.get("tokenizer", self.tokenizer_json)
        saved = checkpoint.get(OBJECTIVE_STATE)  # absent from checkpoints of stateless runs
        if saved is None:
            return
        if self._trainer is None:  # load_from_checkpoint for evaluation, not a resume: rank 0's state
            mine = saved[0]
        elif len(saved) != self._trainer.world_size:
            raise UserError(f"the checkpoint holds per-step objective state of {len(saved)} ranks; resume it with "
                            f"{len(saved)} processes, not {self._trainer.world_size}")
        else:
            mine = saved[self.global_rank]
        for name, state in mine.items():
            if name in self.objectives:  # resume_force may have dropped an objective
                self.objectives[name].load_step_state(state)

    def _every_rank(self, states: dict[str, Any]) -> list[dict[str, Any]]:
        """Each rank's objective states, by rank (CPU copies): each rank resumes its own."""
        states = apply_to_collection(states, Tensor, lambda t: t.detach().cpu())
        world = self._trainer.world_size if self._trainer is not None else 1
        if world == 1:
            return [states]
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, states)
        return gathered

