"""PretrainModule: the shared encoder + a set of objectives, trained by Lightning."""
from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from typing import Any, Callable, NamedTuple, Optional, Sequence

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
from lightning_bert.train.flops import device_peak_flops, step_flops, training_flops_per_token
from lightning_bert.model.encoder import BertEncoder
from lightning_bert.objectives import MicroBatch, Objective, build_objectives, check_batch, encoder_mask
from lightning_bert.train.optim import build_optimizer

log = logging.getLogger(__name__)

OBJECTIVE_STATE = "objective_state"  # checkpoint key: per rank, {objective name: its step_state()}


def packing(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The document-masked packing keys to hand the encoder (data.pack_attention=document): position_ids
    and document_ids where the batch has them, else nothing (one sequence per row)."""
    return {key: batch[key] for key in ("position_ids", "document_ids") if key in batch}


HOST_FACTS = "host_facts"  # training-batch key: what the step must know about the batch, read on the host


class HostFacts(NamedTuple):
    """Facts about a training batch read from its CPU tensors before Lightning moves it to the device, so
    that no per-step decision reads the device (each such read stops the CPU queueing the next step)."""
    padded_rows: tuple[bool, ...]  # per example: whether it ends in padding
    tokens: int  # real (non-padding) tokens


def host_facts(batch: dict[str, Tensor]) -> HostFacts:
    """Read on the CPU batch (on_before_batch_transfer); on a device batch the same facts cost a sync."""
    mask = batch["attention_mask"]
    mask = (mask if mask.device.type == "cpu" else mask.cpu()).numpy()  # numpy: no torch op on the step's path
    return HostFacts(tuple((mask == 0).any(axis=1).tolist()), int(mask.sum()))


def split_batch(batch: dict[str, Tensor], size: int, padded_rows: Optional[Sequence[bool]] = None) -> list[MicroBatch]:
    """One optimizer step's batch -> micro-batches of `size` examples, each knowing whether it holds
    padding: the encoder then skips the mask of an unpadded one and takes the fastest attention kernel
    without asking the device. padded_rows: from host_facts; without it, read here (one host sync)."""
    count = len(batch["input_ids"])
    padded = padded_rows if padded_rows is not None else host_facts(batch).padded_rows
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
        self.bar_values: dict[str, float] = {}  # training values for the progress bar, set at logging steps
        self.host_tokens_seen = 0  # tokens_seen as a host int: the token budget is checked without a device read
        self._first_nonfinite: Optional[Tensor] = None  # [step, grad norm, loss per objective] of the first bad step
        self._micro_step: Callable[[MicroBatch, dict[str, Tensor]], tuple[Tensor, dict[str, Tensor]]] = self._micro_loss
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

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer.training and isinstance(batch, dict) and "attention_mask" in batch:
            batch[HOST_FACTS] = host_facts(batch)  # still on the CPU here: no device read
        return batch

    def _micro_loss(self, part: MicroBatch, denominators: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """One micro-batch: forward, the weighted normalised loss, and per objective (loss sum, correct,
        count). The unit trainer.compile compiles: encoder, heads and losses in one graph where they allow."""
        outputs = self._outputs(part)
        loss = sum(self.objectives[n].weight * out.loss_sum / denominators[n] for n, out in outputs.items())
        sums = {name: torch.stack([out.loss_sum.detach(), (out.preds == out.target).sum(),
                                   out.target.new_full((), len(out.target))]).float() for name, out in outputs.items()}
        return loss, sums

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        t = self.cfg.trainer
        # Dropout draws are a function of (seed, step, rank), like masks: a resumed run repeats them.
        torch.manual_seed(hash((int(self.cfg.run.seed), self.global_step, self.global_rank)) % (2 ** 63))
        facts = batch.pop(HOST_FACTS, None) or host_facts(batch)  # absent when called outside the fit loop
        check_batch(self.objectives.values(), batch, "the training data")
        micro = split_batch(batch, t.batch_size, facts.padded_rows)
        denominators = self._denominators(micro)
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        sums = {name: torch.zeros(3, device=self.device) for name in self.objectives}  # loss, correct, count
        step_loss = torch.zeros((), device=self.device)
        for i, part in enumerate(micro):
            with self._gradient_sync(i == len(micro) - 1):
                loss, part_sums = self._micro_step(part, denominators)
                self.manual_backward(loss)
            step_loss += loss.detach()
            for name, value in part_sums.items():
                sums[name] += value
        grad_norm = self._clip_gradients(optimizer, t.gradient_clip_val)
        logging = self._logging_step(facts.tokens)
        if t.skip_nonfinite > 0:  # skipping must know now: one host sync per step
            if self._nonfinite(step_loss, grad_norm, sums):
                optimizer.zero_grad()
                return
        else:  # noted on the device, read at logging steps and before any checkpoint is written
            self._note_nonfinite(step_loss, grad_norm, sums)
            if logging:
                self.raise_if_diverged()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        self._count_tokens(facts.tokens, logging)
        if logging:
            self._log_step(step_loss, grad_norm, sums)

    def _logging_step(self, tokens: int) -> bool:
        """Whether Lightning writes this step's metrics (its own rule), or the step is the run's last: values
        are logged (and read from the device) only then."""
        budget = self.cfg.trainer.max_tokens
        last = self.global_step + 1 >= self.trainer.max_steps or (
            budget is not None and self.host_tokens_seen + tokens * self.trainer.world_size >= budget)
        return last or self.trainer._logger_connector.should_update_logs

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
        """The immediate divergence guard (trainer.skip_nonfinite > 0; one host sync per step): skip up to
        trainer.skip_nonfinite bad steps, then stop with the step and the loss that went bad."""
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
        self._raise_diverged(self.global_step, float(grad_norm), [float(v[0] / v[2].clamp(min=1)) for v in sums.values()])
        return True  # not reached

    def _note_nonfinite(self, step_loss: Tensor, grad_norm: Tensor, sums: dict[str, Tensor]) -> None:
        """The deferred guard: keep [step, grad norm, losses] of the first non-finite step on the device
        (a few tiny kernels, no read); raise_if_diverged reads it."""
        values = torch.stack([grad_norm.detach().double(), *(v[0].double() / v[2].double().clamp(min=1)
                                                             for v in sums.values())])
        current = torch.cat([values.new_full((1,), self.global_step), values])  # a fill, not a copy from the host
        bad = ~torch.isfinite(step_loss) | ~torch.isfinite(grad_norm)
        if self._first_nonfinite is None:
            self._first_nonfinite = torch.full_like(current, -1.0)
        unset = self._first_nonfinite[0] < 0
        self._first_nonfinite = torch.where(bad & unset, current, self._first_nonfinite)

    def raise_if_diverged(self) -> None:
        """Raise Diverged, naming the first non-finite step, if one happened since the guard last looked
        (one host read): at logging steps, before every checkpoint save and at the end of training, so
        non-finite weights never reach a checkpoint and the last good one is never overwritten."""
        record = self._first_nonfinite
        if record is None:
            return
        seen = (record[0] >= 0).float()
        if self._trainer is not None and self.trainer.world_size > 1:  # every rank stops together
            seen = self.trainer.strategy.reduce(seen, reduce_op="sum")
        if not bool(seen > 0):
            return
        step, grad_norm, *losses = record.tolist()
        if step < 0:
            raise Diverged("diverged: another rank saw a non-finite loss or gradient")
        self._raise_diverged(int(step), grad_norm, losses)

    def _raise_diverged(self, step: int, grad_norm: float, losses: list[float]) -> None:
        named = {f"train/{n}_loss": v for n, v in zip(self.objectives, losses)}
        culprit = next((f"{k}={v}" for k, v in named.items() if not math.isfinite(v)), f"gradient norm={grad_norm}")
        raise Diverged(f"diverged at step {step}: {culprit}")

    def _count_tokens(self, local: int, logging: bool) -> None:
        """tokens_seen (the checkpointed buffer) and its host copy, all ranks; no device read on one device
        (DDP: the sum of the ranks is read at logging steps, and every step under a token budget)."""
        if self.trainer.world_size > 1:
            total = self.trainer.strategy.reduce(torch.full((), local, device=self.device), reduce_op="sum")
            self.tokens_seen += total
            self._window_tokens += total
            if logging or self.cfg.trainer.max_tokens is not None:
                self.host_tokens_seen = int(self.tokens_seen)
            return
        self.tokens_seen += local
        self._window_tokens += local
        self.host_tokens_seen += local

    def _log_step(self, step_loss: Tensor, grad_norm: Tensor, sums: dict[str, Tensor]) -> None:
        """Logging steps only: every value here is read from the device when Lightning writes it."""
        for name, (loss_sum, correct, count) in sums.items():
            self.log(f"train/{name}_loss", loss_sum / count.clamp(min=1), on_step=True)
            self.log(f"train/{name}_acc", correct / count.clamp(min=1), on_step=True)
        self.log("train/loss", step_loss, on_step=True)
        # The bar shows a float read here: Lightning re-reads a prog_bar tensor on every later step, too.
        self.bar_values["train/loss"] = float(step_loss)
        self.log("train/grad_norm", grad_norm, on_step=True)
        self.log("tokens_seen", self.tokens_seen.float(), on_step=True)
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0], on_step=True)
        now = time.perf_counter()  # real tokens per second since the last logging step, all ranks
        rate = self._window_tokens.float() / (now - self._window_start)
        self.log("train/tokens_per_sec", rate, on_step=True)
        if self._peak_flops:  # against the peak of every device in the run
            self.log("train/mfu", rate * self._flops_per_token / (self._peak_flops * self.trainer.world_size),
                     on_step=True)
        self._window_start, self._window_tokens = now, torch.zeros_like(self._window_tokens)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Stop at the token budget; either way the last step validates (Lightning validates when asked
        to stop), so every summary holds metrics from exactly the final weights."""
        budget, flops = self.cfg.trainer.max_tokens, self.cfg.trainer.max_flops
        if (budget is not None and self.host_tokens_seen >= budget) or self.global_step >= self.trainer.max_steps \
                or (flops is not None and self.global_step * step_flops(self.cfg, self.encoder.config.vocab_size) >= flops):
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
        self._window_tokens = torch.zeros((), dtype=torch.long, device=self.device)
        self.host_tokens_seen = int(self.tokens_seen)  # restored by a resume by now; one read per run
        t = self.cfg.trainer
        self._flops_per_token = training_flops_per_token(self.cfg, self.encoder.config.vocab_size)
        self._peak_flops = device_peak_flops(t.precision, t.peak_flops) if self.device.type != "cpu" \
            else t.peak_flops

    def on_train_end(self) -> None:
        self.raise_if_diverged()

    def configure_model(self) -> None:
        """trainer.compile: torch.compile the whole micro-batch step (encoder, objectives' heads and losses;
        backward through AOTAutograd), not only the layers: fewer, fused kernels on GPU."""
        if self.cfg.trainer.compile and self._micro_step == self._micro_loss:
            self._micro_step = torch.compile(self._micro_loss)

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
        self.raise_if_diverged()  # before the file is written: a non-finite state never replaces a good one
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

