"""Sentence-BERT training: a siamese bi-encoder on a pretrained encoder, with BERT-whitening.

    lightning-bert sbert ckpt=runs/NAME/checkpoints/last.ckpt [loss=cosent] [pooling=mean] [whiten=true]

Losses: CoSENT (default) or cosine-similarity MSE on scored pairs (STS-B train, or train_file), and SBERT's
softmax classifier over (u, v, |u-v|) on labelled pairs (train_file TSV/JSONL, a local GLUE pair task, or an
NLI set from Hugging Face `datasets` when online). Before and after training, every pooling (cls, mean, eos)
is scored on STS-B dev: Spearman of cosine vs gold, and anisotropy (mean cosine of random pairs); raw, L2 and,
with whiten=true, whitened (mean and U S^-1/2 from the training sentences' covariance, optional k dims).
The run directory holds config.yaml, metrics.csv, summary.json (sts/<pooling>/spearman_before, ..._after,
anisotropy_before, ..._after; <pooling>_norm and <pooling>_whiten rows too) and sbert.ckpt, a checkpoint
in the pretraining format (the trained encoder), so `export --sentence-transformers` and `finetune` read it.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_bert.args import describe_schema, parse, run_main
from lightning_bert.config import LoggerConfig, check_choice, check_range
from lightning_bert.eval.embeddings import (POOLINGS, embed, inference_device, plain_and_l2, pool, sts_table,
                                           table_summary)
from lightning_bert.errors import UserError
from lightning_bert.train.optim import build_optimizer

log = logging.getLogger(__name__)
LOSSES = ("cosent", "cosine_mse", "softmax")
PAIR_TASKS = ("stsb", "mrpc", "rte", "wnli")
STS_MAX = 5.0  # STS-B gold scores are in [0, 5]


@dataclass
class SBertConfig:
    ckpt: Optional[str] = None  # pretraining checkpoint, e.g. runs/NAME/checkpoints/last.ckpt (required)
    loss: str = "cosent"  # cosent | cosine_mse (scored pairs) | softmax (labelled pairs, classifier on u, v, |u-v|)
    pooling: str = "mean"  # pooling trained: cls | mean | eos (every pooling is evaluated)
    normalize: bool = False  # L2-normalise the trained embeddings (softmax features; cosine losses are unaffected)
    whiten: bool = False  # also score BERT-whitened embeddings (fit on the training sentences), before and after
    whiten_dims: Optional[int] = None  # keep the first k whitened dimensions (null = all)
    train_file: Optional[str] = None  # pairs TSV (header sentence1, sentence2, score|label) or JSONL; null = glue_task
    glue_task: str = "stsb"  # local GLUE pairs when no train_file: stsb (scores) | mrpc | rte | wnli (labels)
    nli_dataset: Optional[str] = None  # softmax on a Hugging Face NLI set (online), e.g. stanfordnlp/snli
    glue_dir: str = "../shared/data/glue"  # GLUE TSV directory (STS-B dev is always the evaluation)
    max_train_examples: Optional[int] = None  # fixed random subset of the training pairs (quick runs)
    max_dev_examples: Optional[int] = None  # fixed random subset of STS-B dev (quick runs; null = all 1500)
    epochs: int = 1  # passes over the training pairs
    batch_size: int = 16  # pairs per step
    lr: float = 5e-5  # peak AdamW learning rate (linear warmup, then linear decay)
    warmup_ratio: float = 0.1  # share of steps spent warming up
    weight_decay: float = 0.01  # AdamW weight decay (not on biases and LayerNorm)
    cosent_scale: float = 20.0  # CoSENT temperature (lambda)
    max_seq_length: Optional[int] = None  # tokens per sentence; null = the checkpoint's data.max_seq_length
    eval_pairs: int = 2000  # random pairs for anisotropy
    random_init: bool = False  # re-initialise the encoder (the "no pretraining" baseline)
    seed: int = 0  # seeds initialisation, data order and anisotropy pairs
    output_dir: str = "runs"  # run directories go under here
    name: Optional[str] = None  # run directory name; default sbert-<timestamp>
    accelerator: str = "auto"  # cpu | gpu | auto (Lightning)
    progress: bool = True  # Lightning progress bar
    logger: LoggerConfig = field(default_factory=LoggerConfig)

    def __post_init__(self) -> None:
        check_choice("sbert", "loss", self.loss, LOSSES)
        check_choice("sbert", "pooling", self.pooling, POOLINGS)
        check_choice("sbert", "glue_task", self.glue_task, PAIR_TASKS)
        check_choice("sbert", "accelerator", self.accelerator, ("auto", "cpu", "gpu", "cuda", "mps"))
        for name in ("epochs", "batch_size", "eval_pairs", "max_train_examples", "max_dev_examples", "whiten_dims", "max_seq_length"):
            value = getattr(self, name)
            check_range("sbert", name, value is None or value >= 1, ">= 1", value)
        check_range("sbert", "lr", 0 < self.lr < 1, "in (0, 1)", self.lr)
        check_range("sbert", "warmup_ratio", 0 <= self.warmup_ratio < 1, "in [0, 1)", self.warmup_ratio)
        if self.batch_size < 2:
            raise UserError("sbert.batch_size must be >= 2 (CoSENT ranks pairs within a batch)")


# ---------------------------------------------------------------------------------------------- losses


def cosent_loss(cos: Tensor, scores: Tensor, scale: float = 20.0) -> Tensor:
    """CoSENT: log(1 + sum over pairs (i, j) with score_i > score_j of exp(scale * (cos_j - cos_i)))."""
    diff = scale * (cos[None, :] - cos[:, None])  # [i, j] = scale * (cos_j - cos_i)
    diff = diff[scores[:, None] > scores[None, :]]
    return torch.logsumexp(torch.cat([diff.new_zeros(1), diff]), dim=0)


def cosine_mse_loss(cos: Tensor, scores: Tensor) -> Tensor:
    """SBERT's regression objective: MSE between cosine and the gold score scaled to [0, 1]."""
    return F.mse_loss(cos, scores / STS_MAX)


# ---------------------------------------------------------------------------------------------- whitening


@dataclass
class Whitening:
    """BERT-whitening (Su et al. 2021): x -> (x - mu) W, W = U S^-1/2 (first k columns) of cov = U S U^T.

    Fit on the training sentences; the output has zero mean and identity covariance on them."""

    mu: Tensor
    weight: Tensor

    @classmethod
    def fit(cls, emb: Tensor, dims: Optional[int] = None) -> "Whitening":
        x = emb.double()
        mu = x.mean(0, keepdim=True)
        cov = (x - mu).T @ (x - mu) / x.shape[0]
        u, s, _ = torch.linalg.svd(cov)
        # Directions without variance cannot be whitened: a LayerNorm output lies in a hyperplane (its
        # normalised part sums to zero), so one eigenvalue is zero up to float32 rounding. They are dropped.
        keep = int((s > s[0] * 1e-6).sum())
        weight = u[:, :keep] / s[:keep].sqrt()
        return cls(mu, weight[:, :dims] if dims else weight)

    def __call__(self, emb: Tensor) -> Tensor:
        return ((emb.double() - self.mu) @ self.weight).float()


# ---------------------------------------------------------------------------------------------- data


Pair = tuple[str, str, Any]


def read_pairs_file(path: str | Path) -> list[Pair]:
    """TSV with a header naming sentence1, sentence2 and score (float) or label, or JSONL with those keys."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"train_file={path}: no such file")
    if path.suffix == ".jsonl":
        numbered = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1) if line.strip()]
        rows = [(n, _json_row(path, n, line)) for n, line in numbered]
    else:
        lines = path.read_text(encoding="utf-8-sig").split("\n")
        numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
        reader = csv.DictReader([line for _, line in numbered], delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = [(numbered[i + 1][0], row) for i, row in enumerate(reader)]  # +1: the header line
    target = next((k for k in ("score", "label") if rows and k in rows[0][1]), None)
    if not rows or target is None or not {"sentence1", "sentence2"} <= set(rows[0][1]):
        raise UserError(f"train_file={path}: needs columns/keys sentence1, sentence2 and score or label")
    return [(str(r["sentence1"]), str(r["sentence2"]), _score(path, n, r[target]) if target == "score" else r[target])
            for n, r in rows]


def _json_row(path: Path, lineno: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except ValueError as err:
        raise UserError(f"train_file={path}:{lineno}: not a JSON object ({err})") from None
    if not isinstance(row, dict):
        raise UserError(f"train_file={path}:{lineno}: not a JSON object (keys sentence1, sentence2, score|label)")
    return row


def _score(path: Path, lineno: int, raw: Any) -> float:
    """A pair's score: a finite number (CoSENT and MSE would turn anything else into a NaN loss)."""
    try:
        score = float(raw)
    except (TypeError, ValueError):
        raise UserError(f"train_file={path}:{lineno}: score {raw!r} is not a number") from None
    if not math.isfinite(score):
        raise UserError(f"train_file={path}:{lineno}: score {raw!r} is not a finite number")
    return score


def read_nli(name: str) -> list[Pair]:
    try:
        import datasets
    except ImportError:
        raise UserError("nli_dataset needs the datasets package: pip install datasets") from None
    try:
        ds = datasets.load_dataset(name, split="train")
    except Exception as err:  # noqa: BLE001 - offline / unknown name: one line
        raise UserError(f"cannot load nli_dataset={name}: {str(err).strip().splitlines()[0]}") from None
    return [(p, h, y) for p, h, y in zip(ds["premise"], ds["hypothesis"], ds["label"]) if y != -1]


def training_pairs(cfg: SBertConfig) -> list[Pair]:
    from lightning_bert.eval.glue import read_task

    if cfg.train_file:
        pairs = read_pairs_file(cfg.train_file)
    elif cfg.nli_dataset:
        pairs = read_nli(cfg.nli_dataset)
    else:
        pairs = [(a, b, y) for a, b, y in read_task(cfg.glue_task, "train", cfg.glue_dir)]
    scored = all(isinstance(y, float) for _, _, y in pairs)
    if cfg.loss != "softmax" and not scored:
        raise UserError(f"loss={cfg.loss} needs scored pairs (glue_task=stsb or a train_file with a score column); "
                        "use loss=softmax for labelled pairs")
    if cfg.loss == "softmax" and scored:
        raise UserError("loss=softmax needs labelled pairs (glue_task=mrpc|rte|wnli, nli_dataset or a train_file "
                        "with a label column); use loss=cosent for scores")
    if cfg.max_train_examples and cfg.max_train_examples < len(pairs):
        pairs = random.Random(cfg.seed).sample(pairs, cfg.max_train_examples)
    return pairs


# ---------------------------------------------------------------------------------------------- model


class SBertModule(nn.Module):
    """Siamese bi-encoder: one shared encoder, pooled (+ optional L2); the softmax head on (u, v, |u-v|)."""

    def __init__(self, encoder: nn.Module, cfg: SBertConfig, num_labels: int = 0):
        super().__init__()
        self.encoder, self.cfg = encoder, cfg
        self.classifier = nn.Linear(3 * encoder.config.hidden_size, num_labels) if num_labels else None

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        hidden = self.encoder(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        return pool(hidden.float(), batch["attention_mask"], self.cfg.pooling, self.cfg.normalize)

    def loss(self, a: dict[str, Tensor], b: dict[str, Tensor], target: Tensor) -> Tensor:
        u, v = self.embed(a), self.embed(b)
        if self.classifier is not None:
            return F.cross_entropy(self.classifier(torch.cat([u, v, (u - v).abs()], dim=-1)), target)
        cos = F.cosine_similarity(u, v, dim=-1)
        if self.cfg.loss == "cosine_mse":
            return cosine_mse_loss(cos, target)
        return cosent_loss(cos, target, self.cfg.cosent_scale)


def lightning_module(model: SBertModule, total_steps: int) -> Any:
    import lightning.pytorch as pl

    cfg = model.cfg

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def training_step(self, batch: tuple, batch_idx: int) -> Tensor:
            loss = self.model.loss(*batch)
            self.log("train/loss", loss, prog_bar=True, batch_size=len(batch[2]))
            return loss

        def configure_optimizers(self) -> Any:
            return build_optimizer(self.model, cfg.lr, cfg.weight_decay, int(cfg.warmup_ratio * total_steps),
                                   total_steps)

    return Module()


def pair_loader(pairs: list[Pair], tokenizer: Any, max_length: int, batch_size: int, seed: int,
                labels: Optional[dict[Any, int]]) -> Any:
    from torch.utils.data import DataLoader

    from lightning_bert.eval.glue import collate_encoded, encode

    left = encode(tokenizer, [(a, None, 0) for a, _, _ in pairs], max_length)
    right = encode(tokenizer, [(b, None, 0) for _, b, _ in pairs], max_length)
    targets = [labels[y] if labels else float(y) for _, _, y in pairs]

    def collate_pairs(items: list) -> tuple:
        a, b, y = zip(*items)
        return collate_encoded(list(a)), collate_encoded(list(b)), torch.tensor(y, dtype=torch.long if labels else torch.float)

    return DataLoader(list(zip(left, right, targets)), batch_size=batch_size, shuffle=True, drop_last=True,
                      generator=torch.Generator().manual_seed(seed), collate_fn=collate_pairs)


# ---------------------------------------------------------------------------------------------- evaluation


def evaluate(encoder: nn.Module, tokenizer: Any, dev: Sequence[tuple[str, str, float]], fit_sentences: Sequence[str],
             cfg: SBertConfig, max_length: int) -> list[dict[str, Any]]:
    """Rows {pooling, variant (none | l2 | whiten), spearman, anisotropy} on STS-B dev for every pooling."""
    fitted = embed(encoder, tokenizer, fit_sentences, POOLINGS, max_length=max_length) if cfg.whiten else {}

    def variants(pooling: str, emb: Tensor) -> dict[str, Tensor]:
        out = plain_and_l2(pooling, emb)
        if cfg.whiten:
            out["whiten"] = Whitening.fit(fitted[pooling], cfg.whiten_dims)(emb)
        return out

    return sts_table(encoder, tokenizer, dev, variants, max_length=max_length, num_pairs=cfg.eval_pairs, seed=cfg.seed)


def format_table(rows_before: Sequence[dict], rows_after: Sequence[dict]) -> str:
    lines = [f"{'pooling':<8} {'variant':<7} {'spearman before':>15} {'after':>7} {'anisotropy before':>17} {'after':>7}"]
    for b, a in zip(rows_before, rows_after):
        lines.append(f"{b['pooling']:<8} {b['variant']:<7} {100 * b['spearman']:15.2f} {100 * a['spearman']:7.2f} "
                     f"{b['anisotropy']:17.4f} {a['anisotropy']:7.4f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- run


def run(cfg: SBertConfig) -> dict[str, Any]:
    """Zero-shot table, SBERT training, table again; writes the run directory; returns the summary."""
    import lightning.pytorch as pl
    from omegaconf import OmegaConf

    from lightning_bert.train.checkpoint import load_pretrained, read_checkpoint
    from lightning_bert.eval.glue import read_task
    from lightning_bert.model.encoder import init_weights
    from lightning_bert.train.runrecord import ResumableCSVLogger
    from lightning_bert.train.machine import check_writable
    from lightning_bert.train.tracking import wandb_logger

    if not cfg.ckpt:
        raise UserError("ckpt=PATH is required (a pretraining checkpoint, e.g. runs/NAME/checkpoints/last.ckpt)")
    run_dir = Path(cfg.output_dir) / (cfg.name or f"sbert-{time.strftime('%Y%m%d-%H%M%S')}")
    if (run_dir / "summary.json").is_file():
        raise UserError(f"{run_dir} already holds an sbert run; pick another name")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"output_dir/name={run_dir} is a file; the run needs a directory there")
    check_writable(run_dir)  # a read-only or full output directory fails now, not after training
    encoder, tokenizer, pre_cfg = load_pretrained(cfg.ckpt)
    pairs = training_pairs(cfg)
    dev = read_task("stsb", "dev", cfg.glue_dir)
    if cfg.max_dev_examples and cfg.max_dev_examples < len(dev):
        dev = random.Random(0).sample(dev, cfg.max_dev_examples)  # the same subset for every run
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.random_init:
        encoder.apply(init_weights)
    max_length = min(cfg.max_seq_length or int(pre_cfg.data.max_seq_length), encoder.config.max_position_embeddings)
    fit_sentences = list(dict.fromkeys(s for a, b, _ in pairs for s in (a, b)))  # whitening: training sentences

    run_dir.mkdir(parents=True, exist_ok=True)
    config = {"sbert": OmegaConf.to_container(OmegaConf.structured(cfg)), "pretraining": OmegaConf.to_container(pre_cfg)}
    OmegaConf.save(OmegaConf.create(config), run_dir / "config.yaml")
    device = inference_device(cfg.accelerator)
    before = evaluate(encoder.to(device), tokenizer, dev, fit_sentences, cfg, max_length)
    log.info("zero-shot STS-B dev (%s): %s", cfg.pooling,
             ", ".join(f"{r['pooling']}/{r['variant']} {r['spearman']:.4f}" for r in before))

    labels = None
    if cfg.loss == "softmax":
        labels = {y: i for i, y in enumerate(sorted({y for *_, y in pairs}, key=str))}
    model = SBertModule(encoder, cfg, len(labels) if labels else 0)
    loader = pair_loader(pairs, tokenizer, max_length, cfg.batch_size, cfg.seed, labels)
    total = cfg.epochs * len(loader)
    if total == 0:
        raise UserError(f"{len(pairs)} training pairs make no batch of batch_size={cfg.batch_size}")
    loggers: list[Any] = [ResumableCSVLogger(run_dir)]
    wandb_cfg = OmegaConf.create({"logger": OmegaConf.to_container(OmegaConf.structured(cfg.logger))})
    wandb = wandb_logger(wandb_cfg, run_dir, run_dir.name, None, config)
    if wandb is not None:
        loggers.append(wandb)
    trainer = pl.Trainer(max_epochs=cfg.epochs, accelerator=cfg.accelerator, devices=1, logger=loggers,
                         enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=cfg.progress,
                         gradient_clip_val=1.0, log_every_n_steps=max(1, min(50, total // 10)))
    trainer.fit(lightning_module(model, total), loader)
    after = evaluate(encoder.to(device), tokenizer, dev, fit_sentences, cfg, max_length)

    metrics = {**table_summary(before, "before"), **table_summary(after, "after")}
    summary = {"status": "finished", "metrics": metrics, "trained_pooling": cfg.pooling, "loss": cfg.loss,
               "train_pairs": len(pairs), "global_step": trainer.global_step, "run_dir": str(run_dir),
               "table": {"before": before, "after": after}}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    save_checkpoint(cfg.ckpt, encoder, run_dir / "sbert.ckpt", read_checkpoint)
    if wandb is not None:
        wandb.experiment.summary.update(metrics)
        wandb.experiment.finish()
    return summary


def save_checkpoint(source: str, encoder: nn.Module, path: Path, read_checkpoint: Any) -> None:
    """The pretraining checkpoint with the trained encoder's weights (its other heads kept), so the
    export and finetune commands read it as they read any pretraining checkpoint."""
    ckpt = read_checkpoint(source)
    state = dict(ckpt["state_dict"])
    state.update({f"encoder.{k}": v.detach().cpu() for k, v in encoder.state_dict().items()})
    torch.save({"hyper_parameters": ckpt["hyper_parameters"], "state_dict": state, "tokenizer": ckpt["tokenizer"],
                "global_step": ckpt.get("global_step", 0)}, path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    def body(args: list[str]) -> int:
        cfg, _ = parse(SBertConfig, args, positional=("ckpt",), section="sbert")
        summary = run(cfg)
        table = summary["table"]
        print(format_table(table["before"], table["after"]))
        print(f"run record: {summary['run_dir']}")
        return 0

    return run_main(__doc__ or "", body, argv, lambda: describe_schema(SBertConfig))
