"""One pretraining run: data -> model -> Lightning Trainer -> run record (+ W&B), resumable."""
from __future__ import annotations

import logging
import math
import os
import signal
import time
import warnings
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterator, Optional

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from lightning_bert.analysis.curves import plot_curves
from lightning_bert.analysis.runs import read_run_dir
from lightning_bert.config import to_dict
from lightning_bert.data.datamodule import PretrainDataModule
from lightning_bert.train.checkpoint_io import DurableCheckpointIO
from lightning_bert.train.durable import CannotWrite, remove_stale_temps
from lightning_bert.train.flops import step_flops
from lightning_bert.errors import Diverged, Preempted, UserError
from lightning_bert.train.launch import agree, in_turns, job_owner
from lightning_bert.train.machine import check_machine, check_writable
from lightning_bert.train.pretrain import PretrainModule
from lightning_bert.train.progress import pretrain_progress_bar
from lightning_bert.train.resume import check_resume_config, check_same_data, resume_checkpoint
from lightning_bert.train.runlock import acquire
from lightning_bert.train.runrecord import ResumableCSVLogger, RunRecorder, trim_metrics
from lightning_bert.train.tracking import wandb_logger

log = logging.getLogger(__name__)
# With OnExceptionCheckpoint, Lightning reads fit(ckpt_path=None) as "last" and warns; resume_checkpoint() decides.
warnings.filterwarnings("ignore", message=r".*\(ckpt_path=None\)` was called without a model")
warnings.filterwarnings("ignore", message=r".*ckpt_path=\"last\"\) is set, but there is no last checkpoint")
# The sampler's position travels in the datamodule's state_dict (resume is exact, tests/test_train.py), which
# Lightning's check for a resumable DataLoader does not see.
warnings.filterwarnings("ignore", message=r".*your dataloader is not resumable")
# Checkpoints are written between steps, after the optimizer step they belong to: that is the state to resume.
warnings.filterwarnings("ignore", message=r".*manual optimization and every_n_train_steps, but no pre-optimization")
WANDB_ID_FILE = "wandb_id.txt"


def resolve_run_dir(cfg: DictConfig) -> Path:
    """$LIGHTNING_BERT_RUN_DIR, else output_dir/name; resume=auto without a name picks the newest run."""
    if os.environ.get("LIGHTNING_BERT_RUN_DIR"):
        return Path(os.environ["LIGHTNING_BERT_RUN_DIR"])
    out = Path(cfg.run.output_dir)
    if cfg.run.name:
        return out / cfg.run.name
    agent_run = wandb_agent_run()
    if agent_run:  # one directory per W&B run, so a requeued (preempted) run finds its checkpoint
        return out / agent_run
    prefix = cfg.run.experiment or "default"
    if cfg.run.resume == "auto":  # the newest run of this experiment, never another experiment's
        runs = sorted(out.glob(f"{prefix}-*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if runs:
            return runs[-1].parent.parent
    return out / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


def wandb_agent_run() -> Optional[str]:
    """`sweep-<id>-<run id>` when `wandb agent` started this process (it sets both variables), else None."""
    sweep, run_id = os.environ.get("WANDB_SWEEP_ID"), os.environ.get("WANDB_RUN_ID")
    return f"sweep-{sweep}-{run_id}" if sweep and run_id else None


def resume_requeued(cfg: DictConfig, run_dir: Path) -> None:
    """`wandb agent` reruns a preempted trial (exit 143/138, marked preempting) with the same run id and the
    same arguments: continue its checkpoint instead of training it again from step 0."""
    own_dir = run_dir.name == wandb_agent_run()  # not a run.name that other runs of the sweep may share
    if cfg.run.resume == "none" and own_dir and (run_dir / "checkpoints" / "last.ckpt").is_file():
        log.info("wandb agent requeued run %s: resuming from its checkpoint", run_dir.name)
        cfg.run.resume = "auto"


@contextmanager
def run_dir_for_child_processes(run_dir: Path) -> Iterator[None]:
    """DDP ranks that Lightning starts re-run this script: they must find the same directory."""
    before = os.environ.get("LIGHTNING_BERT_RUN_DIR")
    os.environ["LIGHTNING_BERT_RUN_DIR"] = str(run_dir)
    try:
        yield
    finally:
        if before is None:
            del os.environ["LIGHTNING_BERT_RUN_DIR"]
        else:
            os.environ["LIGHTNING_BERT_RUN_DIR"] = before


@contextmanager
def preemption_signals() -> Iterator[list[int]]:
    """SIGUSR1 (SLURM's `--signal=USR1@T` notice) takes SIGTERM's path: Lightning stops at the next step
    boundary, KeepGoodCheckpoint saves, and run() exits 128 + the signal. Yields the notice received."""
    received: list[int] = []

    def on_usr1(signum: int, frame: Any) -> None:
        received.append(signum)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.signal(signal.SIGUSR1, on_usr1)
    try:
        yield received
    finally:
        signal.signal(signal.SIGUSR1, before)


def check_trainable(cfg: DictConfig, data: PretrainDataModule) -> None:
    """Stop before training, naming the cause, when the run would train nothing or validate on nothing
    (Lightning would report such a run as finished)."""
    t = cfg.trainer
    if data.corpus is not None and data.corpus.num_tokens == 0:
        raise UserError("the corpus has no tokens left after normalisation and sentence splitting; check data.path "
                        "and data.format")
    if data.train_set is not None:
        per_step = t.batch_size * t.accumulate_grad_batches * t.devices * t.num_nodes
        if len(data.train_set) < per_step:
            raise UserError(f"one step takes {per_step} examples (trainer.batch_size x accumulate_grad_batches x "
                            f"devices x num_nodes) but the training set has {len(data.train_set)}: nothing would "
                            "train; lower trainer.batch_size or use more data")
    if data.val_set is not None and len(data.val_set) == 0 and t.limit_val_batches != 0:
        raise UserError(f"the {len(data.valid_ids)} held-out documents give no validation examples; raise "
                        "data.valid_fraction or data.max_documents (or set trainer.limit_val_batches=0)")


def share_cpu_threads(cfg: DictConfig) -> None:
    """CPU DDP: split the cores between the ranks; oversubscribed OpenMP threads spin and run ~10x slower."""
    import torch

    t = cfg.trainer
    on_cpu = t.accelerator == "cpu" or (t.accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and t.devices > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // t.devices))


def planned_steps(cfg: DictConfig, data: PretrainDataModule) -> tuple[int, int]:
    """(LR schedule length, step cap). trainer.max_tokens counts real tokens, as tokens_seen does: the
    run stops at the first step that reaches it (PretrainModule), and the schedule is sized from the
    examples' mean length; the cap only guards against a budget the data cannot reach."""
    t = cfg.trainer
    if t.max_flops is not None:  # a whole number of steps of a fixed, host-known cost (train/flops.py step_flops)
        steps = max(1, math.ceil(t.max_flops / step_flops(cfg, data.vocab_size)))
        return steps, steps
    if t.max_tokens is None:
        return t.max_steps, t.max_steps
    if data.train_set is None:  # a stream: packed rows fill every slot
        per_step = float(cfg.data.max_seq_length) * t.batch_size * t.accumulate_grad_batches * t.devices * t.num_nodes
        return max(1, math.ceil(t.max_tokens / per_step)), 2 * math.ceil(t.max_tokens / per_step) + 10
    examples = data.train_set.examples
    real = (examples["a_end"] - examples["a_start"]) + np.where(examples["b_start"] >= 0,
                                                                examples["b_end"] - examples["b_start"] + 1, 0) + 2
    per_step = float(real.mean()) * t.batch_size * t.accumulate_grad_batches * t.devices * t.num_nodes
    steps = max(1, math.ceil(t.max_tokens / per_step))
    return steps, 2 * steps + 10


class KeepGoodCheckpoint(OnExceptionCheckpoint):
    """Save on Ctrl-C, SIGTERM or a crash, but never diverged weights, nor again after a failed write."""

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (Diverged, CannotWrite)):
            super().on_exception(trainer, pl_module, exception)


def evaluate(cfg: DictConfig, model: PretrainModule, data: PretrainDataModule, ckpt: Path) -> dict[str, float]:
    """After pretraining: NSP/SOP cross-probes and downstream scores, as summary metrics."""
    from lightning_bert.eval.finetune import run_downstream
    from lightning_bert.eval.probes import cross_probe

    out = cross_probe(model, data) if cfg.eval.probes else {}
    if cfg.eval.downstream:
        out.update(run_downstream(ckpt, cfg.eval, max_train_examples=cfg.eval.max_train_examples))
    log.info("evaluation: %s", ", ".join(f"{k}={v:.4f}" for k, v in out.items()))
    return out


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train; return the summary written to <run dir>/summary.json."""
    from lightning_bert.eval.finetune import check_downstream

    check_machine(cfg)  # accelerator, multi-node launcher, writable cache: before any data work
    check_downstream(cfg.eval)  # a bad eval.glue_dir or task fails now, not after pretraining
    run_dir = Path(agree(lambda: str(resolve_run_dir(cfg))))  # torchrun: every process, one directory
    check_writable(run_dir)  # a read-only, full or blocked output directory: one line, before the lock and the data
    lock = acquire(run_dir, is_owner=job_owner())  # one run per directory; this job's ranks share it
    try:
        return _train(cfg, run_dir)
    finally:
        lock.release()


def _train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    ckpt_dir = run_dir / "checkpoints"
    if ckpt_dir.is_dir() and job_owner():
        remove_stale_temps(ckpt_dir)
    resume_requeued(cfg, run_dir)
    resumed = resume_checkpoint(cfg, run_dir)
    ckpt_path, ckpt = resumed if resumed else (None, None)
    cfg.run.name = cfg.run.name or run_dir.name
    resume_step = 0
    if ckpt is not None:  # a bad file or a changed config fails before data work
        check_resume_config(ckpt["hyper_parameters"]["config"], cfg, cfg.run.resume_force)
        resume_step = ckpt["global_step"]
    pl.seed_everything(cfg.run.seed, workers=True, verbose=False)
    share_cpu_threads(cfg)

    init = None
    if cfg.model.init_from:  # transformers directory: its sizes, tokenizer and weights (transformers not imported)
        from lightning_bert.export import init_from

        init = init_from(cfg)
    data = PretrainDataModule(cfg, tokenizer=init.tokenizer if init else None)
    if ckpt is not None:  # the tokenizer the run trained with, never a new training of it
        data.use_tokenizer(ckpt["tokenizer"])
    # Before Lightning's DDP ranks start; under torchrun in turns, every rank using rank 0's tokenizer.
    in_turns(data.setup, share=lambda: data.tokenizer.to_str(), receive=data.use_tokenizer)
    if ckpt is not None:
        check_same_data(ckpt.get(type(data).__qualname__, {}).get("cache", {}), data.cache_record(),
                        cfg.run.resume_force)
    check_trainable(cfg, data)
    config = to_dict(cfg)
    model = PretrainModule(config, data.vocab_size, data.tokenizer.to_str())
    model.schedule_steps, step_cap = planned_steps(cfg, data)
    if init is not None and ckpt_path is None:
        init.load_into(model)

    record = RunRecorder(run_dir, cfg)
    record.write_config()
    if ckpt_path:
        trim_metrics(run_dir / "metrics.csv", resume_step)
    loggers: list[Any] = [ResumableCSVLogger(run_dir)]
    id_file = run_dir / WANDB_ID_FILE
    wandb = wandb_logger(cfg, run_dir, cfg.run.name, id_file.read_text().strip() if ckpt_path and id_file.is_file()
                         else None, config)
    if wandb is not None:
        loggers.append(wandb)
        if pl.utilities.rank_zero_only.rank == 0:
            id_file.write_text(wandb.experiment.id)
            record.wandb = {"id": wandb.experiment.id, "mode": wandb.experiment.settings.mode}

    t = cfg.trainer
    # Lightning's SLURM auto-requeue would save hpc_ckpt_N.ckpt beside (not as) the run's checkpoint and
    # call scontrol itself; instead the run exits 143/138 and the job script or scheduler requeues it.
    plugins: list[Any] = [DurableCheckpointIO()] + ([SLURMEnvironment(auto_requeue=False)]
                                                    if SLURMEnvironment.detect() else [])
    trainer = pl.Trainer(
        # accumulation and clipping happen in PretrainModule (manual optimisation: exact accumulation)
        max_steps=step_cap, accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy=t.strategy, precision=t.precision, val_check_interval=t.val_check_interval,
        check_val_every_n_epoch=None, limit_val_batches=t.limit_val_batches, log_every_n_steps=t.log_every_n_steps,
        logger=loggers, enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False,
        plugins=plugins,
        callbacks=[ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0,
                                   every_n_train_steps=t.checkpoint_every_n_steps),
                   KeepGoodCheckpoint(dirpath=ckpt_dir, filename="last"), record, pretrain_progress_bar()])
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    try:
        with run_dir_for_child_processes(run_dir), preemption_signals() as notice:
            trainer.fit(model, datamodule=data, ckpt_path=str(ckpt_path) if ckpt_path else None)
        trainer.save_checkpoint(ckpt_dir / "last.ckpt")  # the final state, whatever the save interval
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if trainer.global_rank == 0:
            metrics.update(evaluate(cfg, model, data, ckpt_dir / "last.ckpt"))
    except SIGTERMException:  # Lightning's SystemExit(None) would exit 0: a scheduler must see a stop
        signum = notice[0] if notice else signal.SIGTERM
        name = signal.Signals(signum).name
        record.write("interrupted", {k: float(v) for k, v in trainer.callback_metrics.items()}, error=f"stopped by {name}")
        if wandb is not None and trainer.global_rank == 0:
            with suppress(Exception):  # best effort: the exit code below is what must not be lost
                wandb.experiment.mark_preempting()  # a W&B sweep requeues a preempting run that exits non-zero
        raise Preempted(f"stopped by {name} at step {trainer.global_step}, checkpoint saved; continue with "
                        f"run.name={run_dir.name} run.resume=auto", 128 + signum) from None
    except (CannotWrite, OSError) as err:  # a full or read-only disk, outside the checkpoint writer too
        if isinstance(err, OSError) and err.filename is None:
            raise
        failure = err if isinstance(err, CannotWrite) else CannotWrite(Path(err.filename), err)
        record.write("failed", {k: float(v) for k, v in trainer.callback_metrics.items()}, error=str(failure))
        raise failure from None

    summary = record.write("finished", metrics)
    if trainer.global_rank == 0:
        plot_curves({run_dir.name: [read_run_dir(run_dir)]}, run_dir / "curves.png")  # a look beats a table
    if wandb is not None and trainer.global_rank == 0:
        wandb.experiment.summary.update({**metrics, **{f"best/{k}": v for k, v in record.best.items()},
                                         "tokens_seen": record.tokens_seen})
        wandb.experiment.finish()
    return summary or {}
