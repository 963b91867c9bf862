"""Cross-probe (ALBERT, Table 5): any checkpoint scored on held-out NSP pairs and held-out SOP pairs.

    lightning-bert probe path/to/last.ckpt [data.path=...] [max_examples=N]

One method for every checkpoint, whatever it was trained with: a linear probe (L2-regularised logistic
regression) on the frozen encoder's last-layer [CLS] vector, the input of BERT's pooler. It is fit on
pairs from one part of the held-out documents and scored on pairs from the other part, so no test
document is seen by the probe. Every accuracy comes with the half-width of its 95% interval (Wilson) and the test count.
A model trained with a sentence head (nsp or sop) also reports that head's own accuracy as an extra
key (`probe/<task>_head_acc`), read as "is the pair coherent?" (label 0) or not (label 1), so an NSP
head is scored on SOP pairs and vice versa.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from lightning_bert.args import ProbeArgs, describe_schema, parse, required, run_main
from lightning_bert.data.batch import collate_pretraining
from lightning_bert.data.datamodule import PretrainDataModule
from lightning_bert.data.examples import build_examples, encode_example

log = logging.getLogger(__name__)
PROBE_SEED = 4321  # the same held-out pairs, and the same fit/test split, for every model
TEST_SHARE = 2 / 3  # of the held-out documents: the test pairs; the rest fit the probe
L2 = 1e-3  # ridge penalty on the probe's weights (features standardised), keeps LBFGS finite on separable data
Z95 = 1.959964
TASKS = ("nsp", "sop")
MIN_DOCUMENTS = 4


def split_held_out(valid_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fit documents, test documents): a seeded split of the held-out documents, at least two on each
    side (NSP draws its negatives from another document of the same side)."""
    ids = np.random.default_rng(PROBE_SEED).permutation(np.asarray(valid_ids))
    num_test = min(len(ids) - 2, max(2, round(TEST_SHARE * len(ids))))
    return np.sort(ids[num_test:]), np.sort(ids[:num_test])


def balance_by_length(examples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """As many label-0 as label-1 pairs at every total length, in corpus order. Without this a probe
    reads labels off cues that are not coherence: NSP negatives run short when the other document
    ends (a probe on pair length alone scored 0.56 on 64-token pairs), and labels are not exactly 50/50."""
    lengths = examples["a_end"] - examples["a_start"] + examples["b_end"] - examples["b_start"]
    keep = []
    for length in np.unique(lengths):
        by_label = [np.flatnonzero((lengths == length) & (examples["label"] == y)) for y in (0, 1)]
        n = min(len(rows) for rows in by_label)
        keep += [rng.choice(rows, n, replace=False) for rows in by_label]
    return examples[np.sort(np.concatenate(keep))] if keep else examples[:0]


def held_out_pairs(data: PretrainDataModule, task: str, doc_ids: np.ndarray,
                   max_examples: Optional[int] = None) -> np.ndarray:
    """NSP or SOP pairs (EXAMPLE_DTYPE rows) of the documents `doc_ids`, balanced by label at each length,
    at most `max_examples` of them (a seeded subset)."""
    rng = np.random.default_rng([PROBE_SEED, TASKS.index(task)])
    examples = build_examples(data.corpus, task, data.cfg.data.max_seq_length, rng, short_seq_prob=0.0,
                              doc_ids=doc_ids)
    examples = balance_by_length(examples, rng)
    if max_examples is not None and max_examples < len(examples):
        examples = examples[np.sort(rng.choice(len(examples), max_examples, replace=False))]
    return examples


def pair_batches(data: PretrainDataModule, examples: np.ndarray, batch_size: int = 64) -> list[dict[str, Tensor]]:
    """Unmasked pairs, batched as the model reads them, with `sentence_label`."""
    length = data.cfg.data.max_seq_length
    items = []
    for example in examples:
        enc = encode_example(data.corpus, example, length)
        items.append({"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"],
                      "attention_mask": np.ones(len(enc["input_ids"]), dtype=np.int64),
                      "sentence_label": np.int64(example["label"])})
    return [collate_pretraining(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]


def sentence_head(module: Any) -> Optional[torch.nn.Module]:
    return next((module.objectives[n].head for n in TASKS if n in module.objectives), None)


@torch.no_grad()
def encode_pairs(module: Any, batches: list[dict[str, Tensor]]) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """([CLS] features [N, H], labels [N], the model's own head's predictions [N] or None), on CPU."""
    was_training = module.training
    module.eval()
    head = sentence_head(module)
    cls, labels, preds = [], [], []
    for batch in batches:
        batch = {k: v.to(module.device) for k, v in batch.items()}
        hidden = module(batch)
        cls.append(hidden[:, 0].float().cpu())
        labels.append(batch["sentence_label"].cpu())
        if head is not None:
            preds.append(head(hidden).argmax(-1).cpu())
    module.train(was_training)
    return (torch.cat(cls), torch.cat(labels), torch.cat(preds) if preds else None)


def fit_linear_probe(x: Tensor, y: Tensor, l2: float = L2) -> tuple[Tensor, Tensor, torch.nn.Linear]:
    """Logistic regression on standardised features; returns (mean, std, linear layer). Zero-initialised:
    the loss is convex, so the fit is deterministic and seed-free."""
    x = x.double()
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    probe = torch.nn.Linear(z.shape[1], 2, dtype=torch.float64)
    torch.nn.init.zeros_(probe.weight)
    torch.nn.init.zeros_(probe.bias)
    optimizer = torch.optim.LBFGS(probe.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(z), y) + l2 * probe.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return mean, std, probe


@torch.no_grad()
def probe_predict(fitted: tuple[Tensor, Tensor, torch.nn.Linear], x: Tensor) -> Tensor:
    mean, std, probe = fitted
    return probe((x.double() - mean) / std).argmax(-1)


def interval95(correct: int, n: int) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (sensible also for small n and p near 0 or 1)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + Z95 ** 2 / (2 * n)) / (1 + Z95 ** 2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / (1 + Z95 ** 2 / n)
    return centre - half, centre + half


def accuracy_keys(prefix: str, hits: Tensor) -> dict[str, float]:
    """<prefix> (accuracy) and <prefix>_ci95: the half-width of its 95% Wilson interval."""
    lo, hi = interval95(int(hits.sum()), len(hits))
    return {prefix: float(hits.float().mean()) if len(hits) else float("nan"), f"{prefix}_ci95": (hi - lo) / 2}


def probe_task(module: Any, data: PretrainDataModule, task: str,
               max_examples: Optional[int] = None) -> dict[str, float]:
    """probe/<task>_acc and _ci95 from the linear probe, probe/<task>_n test pairs (and _fit_n), plus
    probe/<task>_head_acc and _ci95 when the model has a sentence head (scored on the same test pairs)."""
    fit_docs, test_docs = split_held_out(data.valid_ids)
    fit_pairs, test_pairs = (held_out_pairs(data, task, docs, max_examples) for docs in (fit_docs, test_docs))
    if min(len(fit_pairs), len(test_pairs)) == 0:  # a probe of nothing has no accuracy (and cannot be fitted)
        log.warning("probe %s skipped: the held-out documents give %d fit and %d test pairs (raise "
                    "data.valid_fraction)", task, len(fit_pairs), len(test_pairs))
        return {}
    x_fit, y_fit, _ = encode_pairs(module, pair_batches(data, fit_pairs))
    x_test, y_test, head_preds = encode_pairs(module, pair_batches(data, test_pairs))
    out = accuracy_keys(f"probe/{task}_acc", probe_predict(fit_linear_probe(x_fit, y_fit), x_test) == y_test)
    out.update({f"probe/{task}_n": float(len(y_test)), f"probe/{task}_fit_n": float(len(y_fit))})
    if head_preds is not None:
        out.update(accuracy_keys(f"probe/{task}_head_acc", head_preds == y_test))
    return out


def cross_probe(module: Any, data: PretrainDataModule, max_examples: Optional[int] = None) -> dict[str, float]:
    """Both probes; `max_examples` caps the pairs on each side (fit, test) of each task. Needs at least
    MIN_DOCUMENTS held-out documents (two per side, for NSP's negatives); with fewer it logs why and
    returns nothing rather than a number without meaning."""
    if len(data.valid_ids) < MIN_DOCUMENTS:
        log.warning("probes skipped: %d held-out documents, at least %d needed (raise data.valid_fraction)",
                    len(data.valid_ids), MIN_DOCUMENTS)
        return {}
    out: dict[str, float] = {}
    for task in TASKS:
        out.update(probe_task(module, data, task, max_examples))
    return out


def format_result(out: dict[str, float]) -> str:
    """One line per accuracy: value ± 95% interval and the test count; never a bare number."""
    lines = []
    for key in sorted(k for k in out if k.endswith("_acc")):
        task = key.split("/")[1].split("_")[0]
        lines.append(f"{key}\t{out[key]:.4f}\t± {out[key + '_ci95']:.4f} (95% CI, n={int(out[f'probe/{task}_n'])})")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    def body(args: list[str]) -> int:
        from tokenizers import Tokenizer

        from lightning_bert.train.checkpoint import read_checkpoint
        from lightning_bert.config import load
        from lightning_bert.train.pretrain import PretrainModule

        opts, overrides = parse(ProbeArgs, args, positional=("ckpt",), section="probe", passthrough=True)
        path = required(opts.ckpt, "probe CKPT [max_examples=N] [pretraining overrides, e.g. data.path=...]")
        ckpt = read_checkpoint(path)
        cfg = load(overrides, base=ckpt["hyper_parameters"]["config"])
        module = PretrainModule.load_from_checkpoint(path, map_location="cpu", weights_only=False)
        data = PretrainDataModule(cfg, tokenizer=Tokenizer.from_str(ckpt["tokenizer"]))
        data.prepare()
        print(format_result(cross_probe(module, data, opts.max_examples)))
        return 0

    return run_main(__doc__ or "", body, argv, lambda: describe_schema(ProbeArgs))
