"""GLUE fine-tuning of a pretrained encoder, "GLUE-sane" as in Cramming: one fixed hyperparameter set
per task, N seeds, the median reported; plus the zero-shot sentence-embedding table.

    lightning-bert finetune ckpt=runs/NAME/checkpoints/last.ckpt tasks=[sst2,mrpc] seeds=3 sts=true
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import random
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_bert.args import describe_schema, parse, run_main
from lightning_bert.train.checkpoint import load_pretrained, read_checkpoint
from lightning_bert.model.encoder import BertEncoder
from lightning_bert.config import check_range, check_choice
from lightning_bert.errors import ConfigError, UserError
from lightning_bert.eval.glue import (HF_GLUE, TASKS, TaskSpec, collate_encoded, encode, make_metrics, parse_downstream,
                                      read_task)
from lightning_bert.model.heads import PairHead
from lightning_bert.train.optim import build_optimizer

log = logging.getLogger(__name__)

# GLUE-sane: one fixed set per task (lr, epochs) for small models (hidden < 512); more epochs where data is
# scarce. Models with hidden >= 512 use Cramming's lr 4e-5 (1e-4 is too high for BERT-base fine-tuning).
TASK_HPARAMS: dict[str, tuple[float, int]] = {
    "cola": (1e-4, 5), "sst2": (1e-4, 3), "mrpc": (1e-4, 5), "rte": (1e-4, 10), "stsb": (1e-4, 5), "wnli": (1e-4, 10),
}
LARGE_MODEL_LR = 4e-5


@dataclass
class FinetuneConfig:
    ckpt: Optional[str] = None  # pretraining checkpoint, e.g. runs/NAME/checkpoints/last.ckpt (required)
    tasks: list[str] = field(default_factory=lambda: list(TASKS))  # GLUE tasks: cola sst2 mrpc rte stsb wnli
    seeds: int = 3  # fine-tuning runs per task (seeds seed .. seed+seeds-1); the median is reported
    seed: int = 0  # first seed
    glue_dir: str = "../shared/data/glue"  # glue_data TSV directory, or "hf" for Hugging Face nyu-mll/glue
    max_seq_length: int = 128  # tokens per pair, [CLS]/[SEP] included; longer side truncated first
    batch_size: int = 32  # examples per step
    lr: Optional[float] = None  # peak AdamW lr; None = TASK_HPARAMS (LARGE_MODEL_LR for hidden >= 512)
    epochs: Optional[int] = None  # None = TASK_HPARAMS
    weight_decay: float = 0.01  # AdamW weight decay (not on biases and LayerNorm)
    warmup_ratio: float = 0.1  # linear warmup over this share of steps, then linear decay to 0
    max_train_examples: Optional[int] = None  # fixed random subset of each train set (quick runs)
    sts: bool = False  # also run the zero-shot STS-B / anisotropy table for every pooling
    output: Optional[str] = None  # write the results as JSON here
    accelerator: str = "auto"  # cpu | gpu | auto (Lightning)
    precision: str = "32-true"  # Lightning precision
    progress: bool = True  # Lightning progress bars
    random_init: bool = False  # re-initialise the encoder (and pooler): the same-size "no pretraining" baseline
    pooler: str = "pretrained"  # pretrained (the checkpoint's NSP/SOP pooler, BERT's GLUE recipe; fresh if none) | reinit

    def __post_init__(self) -> None:
        for task in self.tasks:
            check_choice("finetune", "tasks", task, tuple(TASKS))
        check_range("finetune", "tasks", len(self.tasks) > 0 or self.sts, "non-empty (or sts=true)", self.tasks)
        check_choice("finetune", "accelerator", self.accelerator, ("auto", "cpu", "gpu", "cuda", "mps"))
        check_choice("finetune", "precision", self.precision, ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true"))
        check_choice("finetune", "pooler", self.pooler, ("pretrained", "reinit"))
        for name in ("seeds", "batch_size", "epochs", "max_train_examples"):
            value = getattr(self, name)
            check_range("finetune", name, value is None or value >= 1, ">= 1", value)
        check_range("finetune", "max_seq_length", 8 <= self.max_seq_length <= 4096, "in [8, 4096]", self.max_seq_length)
        check_range("finetune", "lr", self.lr is None or 0 < self.lr < 1, "in (0, 1)", self.lr)
        check_range("finetune", "warmup_ratio", 0 <= self.warmup_ratio < 1, "in [0, 1)", self.warmup_ratio)


def load_config(argv: Sequence[str] = ()) -> FinetuneConfig:
    """Defaults <- `key=value` / `--key value` items (the first bare item is ckpt), through the CLI's one parser.

    Raises UserError (one line)."""
    cfg, _ = parse(FinetuneConfig, argv, positional=("ckpt",), section="finetune")
    if not cfg.ckpt:
        raise ConfigError("ckpt=PATH is required (a pretraining checkpoint, e.g. runs/NAME/checkpoints/last.ckpt)")
    return cfg


def pretrained_pooler(ckpt_path: str | Path) -> Optional[dict[str, Tensor]]:
    """The pooler (dense + tanh on [CLS]) that the checkpoint's NSP or SOP head trained, or None (sentence=none)."""
    state = read_checkpoint(ckpt_path)["state_dict"]
    for task in ("nsp", "sop"):
        prefix = f"objectives.{task}.head.pooler."
        weights = {k[len(prefix):]: v.clone() for k, v in state.items() if k.startswith(prefix)}
        if weights:
            return weights
    return None


def pooler_for(cfg: FinetuneConfig) -> Optional[dict[str, Tensor]]:
    """The pooler weights fine-tuning starts from: the pretrained one unless pooler=reinit or random_init."""
    if cfg.random_init or cfg.pooler == "reinit":
        return None
    return pretrained_pooler(cfg.ckpt)


class GlueModule(L.LightningModule):
    """Pretrained encoder + BERT's pooler/classifier on [CLS]; cross-entropy, or MSE for STS-B.
    `pooler`: weights for the pooler (the pretrained NSP/SOP one); None = freshly initialised."""

    def __init__(self, encoder: torch.nn.Module, spec: TaskSpec, lr: float, weight_decay: float,
                 warmup_steps: int, total_steps: int, pooler: Optional[dict[str, Tensor]] = None):
        super().__init__()
        self.encoder, self.spec = encoder, spec
        self.head = PairHead(encoder.config.hidden_size, spec.num_labels)
        if pooler is not None:
            self.head.pooler.load_state_dict(pooler)
        self.metrics = make_metrics(spec)
        self.lr, self.weight_decay, self.warmup_steps, self.total_steps = lr, weight_decay, warmup_steps, total_steps

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        hidden = self.encoder(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        out = self.head(hidden)
        return out.squeeze(-1) if self.spec.is_regression else out

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self(batch)
        loss = F.mse_loss(out.float(), batch["labels"]) if self.spec.is_regression else F.cross_entropy(out, batch["labels"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        out = self(batch).float()
        self.metrics.update(out if self.spec.is_regression else out.argmax(-1), batch["labels"])

    def on_validation_epoch_end(self) -> None:
        self.log_dict({k: v.float() for k, v in self.metrics.compute().items()})
        self.metrics.reset()

    def configure_optimizers(self) -> Any:
        return build_optimizer(self, self.lr, self.weight_decay, self.warmup_steps, self.total_steps)


def _loader(features: list, labels: list, batch_size: int, seed: Optional[int]) -> DataLoader:
    items = list(zip(features, labels))
    if seed is None:  # evaluation: length-sorted batches pad little; metrics ignore order
        items.sort(key=lambda item: len(item[0][0]))
    return DataLoader(items, batch_size=batch_size, shuffle=seed is not None,
                      generator=torch.Generator().manual_seed(seed) if seed is not None else None,
                      collate_fn=lambda b: collate_encoded([f for f, _ in b], [y for _, y in b]))


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Hide Lightning's per-Trainer banners and warnings that do not apply here (18 Trainers per GLUE run)."""
    banner = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = banner.level
    banner.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for pattern in (".*does not have many workers.*",  # in-memory token lists need no workers
                        ".*no `val_dataloader`.*",  # dev is evaluated once, after the last epoch
                        ".*sync_dist=True.*",  # one process, even inside a finished DDP run
                        ".*LeafSpec.*"):  # Lightning-internal deprecation
            warnings.filterwarnings("ignore", pattern)
        try:
            yield
        finally:
            banner.setLevel(level)


def finetune_task(encoder: torch.nn.Module, tokenizer: Any, spec: TaskSpec, cfg: FinetuneConfig,
                  seeds: Sequence[int], pooler: Optional[dict[str, Tensor]] = None) -> list[dict[str, float]]:
    """Fine-tune a fresh copy of `encoder` once per seed; dev metrics of the last epoch (no picking on dev)."""
    train, dev = read_task(spec.name, "train", cfg.glue_dir), read_task(spec.name, "dev", cfg.glue_dir)
    if cfg.max_train_examples and cfg.max_train_examples < len(train):
        train = random.Random(0).sample(train, cfg.max_train_examples)  # same subset for every seed
    max_len = min(cfg.max_seq_length, encoder.config.max_position_embeddings)
    train_x, dev_x = encode(tokenizer, train, max_len), encode(tokenizer, dev, max_len)
    lr = cfg.lr or (TASK_HPARAMS[spec.name][0] if encoder.config.hidden_size < 512 else LARGE_MODEL_LR)
    epochs = cfg.epochs or TASK_HPARAMS[spec.name][1]
    total = epochs * math.ceil(len(train) / cfg.batch_size)
    log.info("%s: %d train / %d dev examples, lr %g, %d epochs, seeds %s", spec.name, len(train), len(dev), lr, epochs, list(seeds))
    results = []
    for seed in seeds:
        L.seed_everything(seed, workers=True, verbose=False)
        model = GlueModule(copy.deepcopy(encoder), spec, lr, cfg.weight_decay, int(cfg.warmup_ratio * total), total,
                           pooler)
        with _quiet_lightning():
            trainer = L.Trainer(max_epochs=epochs, accelerator=cfg.accelerator, devices=1, precision=cfg.precision,
                                logger=False, enable_checkpointing=False, enable_model_summary=False,
                                enable_progress_bar=cfg.progress, gradient_clip_val=1.0, num_sanity_val_steps=0)
            trainer.fit(model, _loader(train_x, [y for *_, y in train], cfg.batch_size, seed))
            [scores] = trainer.validate(model, _loader(dev_x, [y for *_, y in dev], 256, None), verbose=False)
        results.append({m: float(scores[m]) for m in spec.metrics})
        log.info("%s seed %d: %s", spec.name, seed, results[-1])
    return results


def summarize(results: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    """glue/<task>/<metric> = median over seeds; glue/avg = mean over tasks of each task's metric mean (GLUE score)."""
    out = {f"glue/{task}/{m}": statistics.median(r[m] for r in runs) for task, runs in results.items() for m in runs[0]}
    if results:
        out["glue/avg"] = statistics.mean(statistics.mean(out[f"glue/{t}/{m}"] for m in runs[0]) for t, runs in results.items())
    return out


def initial_encoder(cfg: FinetuneConfig) -> tuple[BertEncoder, Any]:
    """(encoder, tokenizer) fine-tuning starts from: the checkpoint's, or with random_init a freshly built
    encoder of the same architecture seeded with cfg.seed (every parameter new, whatever its kind)."""
    encoder, tokenizer, _ = load_pretrained(cfg.ckpt)  # UserError (one line) for a bad path
    if cfg.random_init:
        torch.manual_seed(cfg.seed)
        encoder = BertEncoder(encoder.config)
    return encoder, tokenizer


def run(cfg: FinetuneConfig) -> dict[str, Any]:
    """Load the checkpoint, fine-tune every task for every seed, optionally run the embedding table."""
    from lightning_bert.eval.embeddings import embedding_table, inference_device, table_summary

    encoder, tokenizer = initial_encoder(cfg)
    pooler = pooler_for(cfg)
    log.info("pooler: %s", "pretrained (from the checkpoint's sentence head)" if pooler is not None else "fresh")
    seeds = range(cfg.seed, cfg.seed + cfg.seeds)
    results = {t: finetune_task(encoder, tokenizer, TASKS[t], cfg, seeds, pooler) for t in cfg.tasks}
    summary, rows = summarize(results), []
    if cfg.sts:
        rows = embedding_table(encoder.to(inference_device(cfg.accelerator)), tokenizer, cfg.glue_dir)
        summary.update(table_summary(rows))
    return {"ckpt": str(cfg.ckpt), "config": dataclasses.asdict(cfg), "seeds": list(seeds),
            "pooler": "pretrained" if pooler is not None else "fresh",
            "results": results, "sts": rows, "summary": summary}


# FinetuneConfig field -> the eval.* key of pretraining that sets it (run_downstream)
EVAL_KEYS = {"finetune.seeds": "eval.glue_seeds", "finetune.max_train_examples": "eval.max_train_examples",
             "finetune.tasks": "eval.downstream", "finetune.glue_dir": "eval.glue_dir"}


def eval_names(message: str) -> str:
    for ours, theirs in EVAL_KEYS.items():
        message = message.replace(ours, theirs)
    return message


def check_downstream(cfg_eval: Any) -> None:
    """Before pretraining: eval.downstream's task names and eval.glue_dir's files must be readable, so a
    typo fails in a second (UserError, one line) instead of after hours of training."""
    tasks, sts = parse_downstream(list(cfg_eval.downstream))
    if tasks or sts:  # the fine-tuning options as run_downstream will pass them, refused under their eval.* names
        try:
            FinetuneConfig(ckpt="-", tasks=tasks, seeds=cfg_eval.glue_seeds, glue_dir=cfg_eval.glue_dir, sts=sts,
                           max_train_examples=cfg_eval.max_train_examples)
        except ConfigError as err:
            raise ConfigError(eval_names(str(err))) from None
    if str(cfg_eval.glue_dir) == HF_GLUE:
        try:
            import datasets  # noqa: F401
        except ImportError:
            raise UserError("eval.glue_dir=hf needs the datasets package: pip install datasets") from None
        return
    needed = [(t, split) for t in tasks for split in ("train", "dev")] + ([("stsb", "dev")] if sts else [])
    for task, split in dict.fromkeys(needed):
        try:
            read_task(task, split, cfg_eval.glue_dir)
        except UserError as err:
            raise UserError(f"eval.glue_dir={cfg_eval.glue_dir} (eval.downstream): {err}") from None


def run_downstream(ckpt_path: str | Path, cfg_eval: Any, **overrides: Any) -> dict[str, float]:
    """What pretraining calls after fit: eval.downstream (e.g. ["sst2", "glue:mrpc", "sts"]) -> flat summary
    keys glue/<task>/<metric>, glue/avg, sts/<pooling>[_norm]/{spearman,anisotropy}. `overrides` are
    FinetuneConfig fields (e.g. max_train_examples=2000, accelerator="cpu")."""
    tasks, sts = parse_downstream(list(cfg_eval.downstream))
    if not tasks and not sts:
        return {}
    options = {"progress": False, **overrides}
    cfg = FinetuneConfig(ckpt=str(ckpt_path), tasks=tasks, seeds=cfg_eval.glue_seeds, glue_dir=cfg_eval.glue_dir,
                         sts=sts, **options)
    return run(cfg)["summary"]


def format_table(out: dict[str, Any]) -> str:
    lines = [f"{'task':<6} {'metric':<9} {'median':>7}  seeds"]
    for task, runs in out["results"].items():
        for m in runs[0]:
            lines.append(f"{task:<6} {m:<9} {out['summary'][f'glue/{task}/{m}']:7.4f}  "
                         + " ".join(f"{r[m]:.4f}" for r in runs))
    if "glue/avg" in out["summary"]:
        lines.append(f"{'avg':<6} {'':<9} {out['summary']['glue/avg']:7.4f}")
    if out["sts"]:
        lines += ["", f"{'pooling':<10} {'sts spearman':>12} {'anisotropy':>10}"]
        lines += [f"{r['pooling'] + ('_norm' if r['normalize'] else ''):<10} {r['spearman']:12.4f} {r['anisotropy']:10.4f}"
                  for r in out["sts"]]
    return "\n".join(lines)


def check_output_file(path: Path, key: str) -> None:
    """A results file can be written there: not a directory, in a writable directory."""
    from lightning_bert.train.machine import check_writable

    if path.is_dir():
        raise UserError(f"{key}={path} is a directory; give a file path, e.g. {path / 'results.json'}")
    check_writable(path.parent)


def main(argv: Optional[Sequence[str]] = None) -> int:
    def body(args: list[str]) -> int:
        cfg = load_config(args)
        if cfg.output:  # found now, not after every task is fine-tuned
            check_output_file(Path(cfg.output), "output")
        out = run(cfg)
        print(format_table(out))
        if cfg.output:
            Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
            Path(cfg.output).write_text(json.dumps(out, indent=2))
            log.info("results written to %s", cfg.output)
        return 0

    return run_main(__doc__ or "", body, argv, lambda: describe_schema(FinetuneConfig))
