"""The Sentence-BERT table: STS-B dev Spearman and anisotropy for cls / mean / eos pooling x (none, L2,
whitening) x (zero-shot, SBERT-trained), for a pretrained encoder and the same encoder randomly initialised.

    nice python benchmarks/sbert_table.py CKPT [--out DIR] [--max-train N] [--epochs E] [--lr LR]

One SBERT run (CoSENT on STS-B train) per pooling and initialisation; each run scores every pooling
before and after, and the table keeps the trained pooling's rows after training. Whitening is fit on
the training sentences. Reference points (SBERT paper, Spearman x 100 on STS-B test, BERT-base):
BERT CLS 16.50, averaged BERT 46.35, SBERT-NLI-base 77.03, SBERT trained on STSb 84.67.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from lightning_bert.eval.embeddings import POOLINGS
from lightning_bert.eval.sbert import SBertConfig, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt")
    parser.add_argument("--out", default="sbert_table")
    parser.add_argument("--max-train", type=int, default=None, help="STS-B train pairs (default all 5749)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--glue-dir", default="../shared/data/glue")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for init in ("pretrained", "random"):
        for pooling in POOLINGS:
            name = f"{init}-{pooling}"
            start = time.time()
            summary = run(SBertConfig(ckpt=args.ckpt, pooling=pooling, whiten=True, random_init=init == "random",
                                      max_train_examples=args.max_train, epochs=args.epochs, lr=args.lr,
                                      glue_dir=args.glue_dir, output_dir=str(out / "runs"), name=name,
                                      progress=False))
            results[name] = summary["table"]
            print(f"{name}: {time.time() - start:.0f}s", flush=True)
    lines = ["| encoder | pooling | variant | zero-shot Spearman x100 | anisotropy | SBERT-trained Spearman x100 | anisotropy |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for init in ("pretrained", "random"):
        for pooling in POOLINGS:
            table = results[f"{init}-{pooling}"]
            for before, after in zip(table["before"], table["after"]):
                if before["pooling"] != pooling:
                    continue
                lines.append(f"| {init} | {pooling} | {before['variant']} | {100 * before['spearman']:.2f} | "
                             f"{before['anisotropy']:.3f} | {100 * after['spearman']:.2f} | {after['anisotropy']:.3f} |")
    table_md = "\n".join(lines)
    (out / "table.md").write_text(table_md + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(table_md)


if __name__ == "__main__":
    main()
