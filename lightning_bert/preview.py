"""Print a few training examples of any config as text: what the model actually trains on.

    python -m lightning_bert.preview [experiment=NAME] [key=value ...] [--n 3]

Segments A and B, the sentence-task label, and every masked position as `[original->shown]`
(`[MASK]`, a random token, or the same token kept), with span boundaries for SBO.
"""
from __future__ import annotations

import sys
from typing import Any, Optional

import numpy as np

from lightning_bert.data.masking import IGNORE
from lightning_bert.data.tokenizer import PAD_ID

LABELS = {"nsp": ("B follows A", "B is from another document"), "sop": ("in order", "swapped")}


def render(item: dict[str, np.ndarray], tokenizer: Any, task: str) -> str:
    """One example as text: tokens joined by spaces, masked ones as [original->shown]."""
    ids, segments, order = item["input_ids"], item["token_type_ids"], item.get("plm_order")
    labels = item["mlm_labels"] if order is None else np.where(order > 0, ids, IGNORE)  # XLNet: no corruption
    words, masked = [], 0
    for pos, (shown, gold) in enumerate(zip(ids.tolist(), labels.tolist())):
        if shown == PAD_ID:
            continue
        text = tokenizer.id_to_token(shown)
        if gold != IGNORE:
            masked += 1
            text = (f"[{tokenizer.id_to_token(gold)}->{'=' if gold == shown else text}]" if order is None
                    else f"[{text}->=#{order[pos]}]")  # PLM: kept, predicted, #place in the factorisation order
        if pos and segments[pos] != segments[pos - 1]:
            text = f"\n    B: {text}"
        words.append(text)
    head = f"  length {int((ids != PAD_ID).sum())}, {masked} predicted"
    if "sentence_label" in item:
        head += f", label {int(item['sentence_label'])} ({LABELS[task][int(item['sentence_label'])]})"
    return f"{head}\n    A: " + " ".join(words).replace(" \n", "\n")


def main(argv: Optional[list[str]] = None) -> int:
    from lightning_bert.args import PreviewArgs, describe_schema, parse, run_main

    def body(args: list[str]) -> int:
        from lightning_bert.config import load
        from lightning_bert.data.datamodule import PretrainDataModule

        opts, overrides = parse(PreviewArgs, args, section="preview", passthrough=True)
        cfg = load(overrides)
        data = PretrainDataModule(cfg)
        data.setup()
        m = cfg.masking
        print(f"sentence={cfg.objective.sentence} masking={m.mode}/{m.unit} rate={m.rate} tokenizer={cfg.tokenizer.kind}"
              f"  ([original->shown], '=' = kept but predicted)")
        for index in range(min(opts.n, len(data.train_set))):
            print(f"\nexample {index}:\n{render(data.train_set[index], data.tokenizer, cfg.objective.sentence)}")
        return 0

    return run_main(__doc__ or "", body, argv, lambda: describe_schema(PreviewArgs) + "\n  (and every train key)")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
