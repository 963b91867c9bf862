"""Masking and pair statistics on real text, and the per-example cost of the data pipeline.

    python benchmarks/data_stats.py [--docs 150] [--data ../shared/data/wikipedia-en/train.txt]

Prints, per masking unit: the share of tokens selected and the 80/10/10 split ([MASK] / random /
kept), the mean span length in words (span), then the NSP and SOP label balance, then microseconds
per example for encode_example and mask_example.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from lightning_bert.config import MaskingConfig
from lightning_bert.data.cache import corpus_key, tokenized_corpus
from lightning_bert.data.corpus import read_documents
from lightning_bert.data.examples import build_examples, encode_example
from lightning_bert.data.masking import IGNORE, dynamic_rng, mask_example
from lightning_bert.data.tokenizer import MASK_ID, tokenizer_for

VOCAB = 8192


def masking_stats(encoded: list[dict], unit: str) -> str:
    cfg = MaskingConfig(unit=unit)
    maskable = selected = masked = kept = 0
    span_words: list[int] = []
    for i, e in enumerate(encoded):
        out = mask_example(e["input_ids"], e["special"], e["word_starts"], cfg, VOCAB, dynamic_rng(0, 0, i))
        chosen = out["mlm_labels"] != IGNORE
        shown, original = out["input_ids"][chosen], e["input_ids"][chosen]
        maskable += int((~e["special"]).sum())
        selected += int(chosen.sum())
        masked += int((shown == MASK_ID).sum())
        kept += int((shown == original).sum())
        if unit == "span":  # spans never touch, so each run of selected positions is one span
            edges = np.diff(np.r_[0, chosen.astype(np.int8), 0])
            span_words += [int(e["word_starts"][a:b].sum()) for a, b in zip(np.flatnonzero(edges == 1),
                                                                          np.flatnonzero(edges == -1))]
    random = selected - masked - kept
    line = (f"{unit:>5}: {maskable:,} tokens, selected {selected / maskable:.2%}; of those [MASK] "
            f"{masked / selected:.2%}, random {random / selected:.2%}, kept {kept / selected:.2%}")
    return line + (f"; mean span {np.mean(span_words):.2f} words over {len(span_words):,} spans" if span_words else "")


def per_example_us(fn, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=150)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/wikipedia-en/train.txt"))
    args = parser.parse_args()
    documents = read_documents([args.data])[: args.docs]
    key = corpus_key(documents)
    with tempfile.TemporaryDirectory() as cache:
        tokenizer = tokenizer_for(documents, key, "wordpiece", VOCAB, True, 2, Path(cache))
        corpus = tokenized_corpus(documents, key, tokenizer, Path(cache))
        print(f"{args.docs} documents, {corpus.num_tokens:,} tokens, WordPiece {VOCAB}, length 128")
        examples = build_examples(corpus, "none", 128, np.random.default_rng(0))
        encoded = [encode_example(corpus, e, 128) for e in examples]
        for unit in ("token", "word", "span"):
            print(masking_stats(encoded, unit))
        for task in ("nsp", "sop"):
            labels = np.concatenate([build_examples(corpus, task, 128, np.random.default_rng(s))["label"]
                                     for s in range(10)])
            print(f"{task}: {len(labels):,} pairs over 10 seeds, label 1 share {labels.mean():.2%}")
        n = min(2000, len(examples))
        print(f"encode_example: {per_example_us(lambda i: encode_example(corpus, examples[i], 128), n):.1f} us")
        for unit in ("token", "word", "span"):
            cfg = MaskingConfig(unit=unit)
            cost = per_example_us(lambda i: mask_example(encoded[i]["input_ids"], encoded[i]["special"],
                                                         encoded[i]["word_starts"], cfg, VOCAB, dynamic_rng(0, 0, i)), n)
            print(f"mask_example ({unit}, incl. generator): {cost:.1f} us")


if __name__ == "__main__":
    main()
