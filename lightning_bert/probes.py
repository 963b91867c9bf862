"""Cross-probe (ALBERT, Table 5): any checkpoint scored on held-out NSP pairs and held-out SOP pairs.

    python -m lightning_bert.probes path/to/last.ckpt [data.path=...] [max_examples=2000]

A model with a sentence head (nsp or sop) answers with that head, read as "is the pair coherent?"
(label 0) or not (label 1), so an NSP head is scored on SOP and vice versa. A model without one
(sentence=none) gets a linear probe on its frozen [CLS] vector, fit on half of the pairs.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_bert.data.datamodule import PretrainDataModule, collate
from lightning_bert.data.examples import build_examples, encode_example

PROBE_SEED = 4321  # the same held-out pairs for every model


def held_out_batches(data: PretrainDataModule, task: str, max_examples: int, batch_size: int = 64) -> list[dict]:
    """Unmasked NSP or SOP pairs from the validation documents."""
    length = data.cfg.data.max_seq_length
    examples = build_examples(data.corpus, task, length, np.random.default_rng(PROBE_SEED), short_seq_prob=0.0,
                              doc_ids=data.valid_ids)[:max_examples]
    items = []
    for example in examples:
        enc = encode_example(data.corpus, example, length)
        items.append({"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"],
                      "attention_mask": np.ones(len(enc["input_ids"]), dtype=np.int64),
                      "sentence_label": np.int64(example["label"])})
    return [collate(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]


def _linear_probe(features: Tensor, labels: Tensor) -> float:
    """Logistic regression on the first half, accuracy on the second half."""
    half = len(labels) // 2
    mean, std = features[:half].mean(0), features[:half].std(0) + 1e-6
    x = (features - mean) / std
    probe = torch.nn.Linear(x.shape[1], 2)
    optimizer = torch.optim.LBFGS(probe.parameters(), max_iter=100)

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(x[:half]), labels[:half]) + 1e-3 * probe.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return (probe(x[half:]).argmax(-1) == labels[half:]).float().mean().item()


@torch.no_grad()
def probe_accuracy(module: Any, batches: list[dict[str, Tensor]]) -> float:
    module.eval()
    head = next((module.objectives[n].head for n in ("nsp", "sop") if n in module.objectives), None)
    preds, cls, labels = [], [], []
    for batch in batches:
        batch = {k: v.to(module.device) for k, v in batch.items()}
        hidden = module(batch)
        labels.append(batch["sentence_label"])
        if head is not None:
            preds.append(head(hidden).argmax(-1))
        else:
            cls.append(hidden[:, 0].float())
    labels_t = torch.cat(labels)
    if head is not None:
        return (torch.cat(preds) == labels_t).float().mean().item()
    with torch.enable_grad():
        return _linear_probe(torch.cat(cls).cpu(), labels_t.cpu())


def cross_probe(module: Any, data: PretrainDataModule, max_examples: int = 2000) -> dict[str, float]:
    return {f"probe/{task}_acc": probe_accuracy(module, held_out_batches(data, task, max_examples))
            for task in ("nsp", "sop")}


def main(argv: list[str]) -> int:
    from tokenizers import Tokenizer

    from lightning_bert.checkpoint import read_checkpoint
    from lightning_bert.config import load
    from lightning_bert.errors import UserError
    from lightning_bert.pretrain import PretrainModule

    if not argv or "=" in argv[0]:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        ckpt = read_checkpoint(argv[0])
        max_examples = next((int(a.split("=", 1)[1]) for a in argv[1:] if a.startswith("max_examples=")), 2000)
        overrides = [a for a in argv[1:] if not a.startswith("max_examples=")]
        cfg = load(overrides, base=ckpt["hyper_parameters"]["config"])
        module = PretrainModule.load_from_checkpoint(argv[0], map_location="cpu", weights_only=False)
        data = PretrainDataModule(cfg, tokenizer=Tokenizer.from_str(ckpt["tokenizer"]))
        data.prepare()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, value in cross_probe(module, data, max_examples).items():
        print(f"{name}\t{value:.4f}")
    return 0



if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
