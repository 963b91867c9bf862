"""Data pipeline rate: real tokens/s that the training dataloader delivers with dynamic masking, per worker
process (measured with num_workers=0: the main process does exactly one worker's job, collate included),
for packed, pair and span-masked batches and the hf_streaming backend; then the workers one GPU needs.

    PYTHONPATH=. python benchmarks/data_rate.py [--seconds 10] [--docs 1000] [--out /tmp/data_rate]

At the 40% MFU goal one H100 consumes about 730k tokens/s of BERT-base at sequence 128 (0.54 GFLOP per
training token; issue 20), eight of them 5.8M tokens/s.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from lightning_bert.config import load
from lightning_bert.data.datamodule import PretrainDataModule

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikipedia-en"
PER_GPU = 730_000  # tokens/s one H100 consumes at 40% MFU (BERT-base, sequence 128)
CASES = {  # label -> overrides (all: dynamic masks, sequence 128, batch 64)
    "packed dynamic MLM": ["objective.sentence=none"],
    "pair (NSP) dynamic MLM": ["objective.sentence=nsp"],
    "span-masked (SpanBERT) packed": ["masking.unit=span", "objective.sentence=none"],
    "hf_streaming packed dynamic MLM": ["data.backend=hf_streaming", "objective.sentence=none"],
}


def rate(overrides: list[str], args: argparse.Namespace) -> float:
    streaming = "data.backend=hf_streaming" in overrides
    cfg = load([f"data.path={DATA / 'valid.txt'}", f"data.max_documents={args.docs}", "data.max_seq_length=128",
                "trainer.batch_size=64", "masking.mode=dynamic", "data.num_workers=0", f"data.cache_dir={args.out}",
                "logger.wandb.mode=disabled", *([f"data.valid_path=[{DATA / 'valid.txt'}]"] if streaming else []),
                *overrides])
    data = PretrainDataModule(cfg)
    data.setup("fit")
    tokens, start, epoch = 0, None, 0
    while start is None or time.perf_counter() - start < args.seconds:
        data.set_epoch(epoch)  # later epochs draw new masks, as training does
        for batch in data.train_dataloader():
            if start is None:  # the clock starts after the first batch: a stream's start-up is not its rate
                start = time.perf_counter()
                continue
            tokens += int(batch["attention_mask"].sum())
            if time.perf_counter() - start >= args.seconds:
                break
        epoch += 1
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time per case")
    parser.add_argument("--docs", type=int, default=1000, help="documents of the real corpus slice")
    parser.add_argument("--out", type=Path, default=Path("/tmp/data_rate"), help="token caches")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a worker process: one thread
    rates = {}
    for label, overrides in CASES.items():
        rates[label] = rate(overrides, args)
        print(f"{label}: {rates[label]:,.0f} tokens/s per worker", flush=True)
    need = math.ceil(PER_GPU / rates["packed dynamic MLM"])
    print(f"workers per GPU for {PER_GPU:,} tokens/s (H100, BERT-base seq 128 at 40% MFU), packed dynamic MLM: {need}"
          + ("" if need <= 4 else "  (> 4: collate and masking need vectorising)"))


if __name__ == "__main__":
    main()
