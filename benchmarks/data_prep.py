"""Data preparation cost: cold (tokenizer + token cache built), warm (cache hit) and peak RSS, 1x vs 4x.

    nice python benchmarks/data_prep.py [--data ../shared/data/wikipedia-en] [--vocab 8192]

1x = wikipedia-en/train.txt (16 MB, 2.6M words); 4x = train.txt + train_extra.txt.gz (4.2x the tokens).
Each measurement runs PretrainDataModule.prepare() in a fresh subprocess (peak RSS is per process),
cold into an empty cache directory, then warm on the cache it left. Prints one table.

Measured 2026-11-26 on the project's 2-core CPU (load average ~10 from other jobs: cold times only
compare side by side), this tree vs commit 8658392 (documents held in a list, content-hashed):
    corpus  tokens      cold s         warm s        cold peak RSS MB   warm peak RSS MB
    1x      4,007,708   48.4 (46.7)    0.02 (1.11)   519 (570)          435 (554)
    4x      16,808,579  163  (177)     0.03 (4.30)   589 (868)          438 (868)
    4x/1x cold peak RSS: 1.13x (1.52x); interpreter with torch + Lightning imported: 429 MB
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from lightning_bert.config import load
from lightning_bert.data.datamodule import PretrainDataModule
imported = time.perf_counter()
base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
paths, cache, vocab = json.loads(sys.argv[1])
data = PretrainDataModule(load([f"data.path=[{','.join(paths)}]", f"data.cache_dir={cache}",
                                f"tokenizer.vocab_size={vocab}", "logger.wandb.mode=disabled"]))
start = time.perf_counter()
data.prepare()
end = time.perf_counter()
print(json.dumps({"prepare_s": end - start, "import_s": imported - t0, "tokens": data.corpus.num_tokens,
                  "documents": data.corpus.num_documents, "base_rss_mb": base_rss,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(paths: list[str], cache: str, vocab: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps([paths, cache, vocab])], check=True,
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/wikipedia-en"))
    parser.add_argument("--vocab", type=int, default=8192)
    args = parser.parse_args()
    corpora = {"1x": [f"{args.data}/train.txt"], "4x": [f"{args.data}/train.txt", f"{args.data}/train_extra.txt.gz"]}
    rows = {}
    for name, paths in corpora.items():
        with tempfile.TemporaryDirectory() as cache:
            rows[name] = (measure(paths, cache, args.vocab), measure(paths, cache, args.vocab))
    print(f"{'corpus':8}{'docs':>7}{'tokens':>12}{'cold s':>9}{'warm s':>9}{'import s':>10}"
          f"{'base RSS MB':>13}{'cold peak RSS MB':>18}{'warm peak RSS MB':>18}")
    for name, (cold, warm) in rows.items():
        print(f"{name:8}{cold['documents']:>7}{cold['tokens']:>12,}{cold['prepare_s']:>9.2f}{warm['prepare_s']:>9.2f}"
              f"{warm['import_s']:>10.2f}{cold['base_rss_mb']:>13.0f}{cold['peak_rss_mb']:>18.0f}"
              f"{warm['peak_rss_mb']:>18.0f}")
    (c1, _), (c4, _) = rows["1x"], rows["4x"]
    print(f"4x/1x: tokens {c4['tokens'] / c1['tokens']:.2f}x, cold peak RSS {c4['peak_rss_mb'] / c1['peak_rss_mb']:.2f}x, "
          f"added over base {(c4['peak_rss_mb'] - c4['base_rss_mb']) / (c1['peak_rss_mb'] - c1['base_rss_mb']):.2f}x")


if __name__ == "__main__":
    main()
