"""A stand-in for train.py in sweep/report tests: same command line, same run record, no model.

    python tests/fake_train.py objective.sentence=nsp run.seed=1 ...

Writes config.yaml, metrics.csv and summary.json into $LIGHTNING_BERT_RUN_DIR with numbers that
are a deterministic function of the arguments. Test hooks (environment):
  FAKE_TRAIN_CALLS=path     append one JSON line per call: run dir, arguments, W&B env
  FAKE_TRAIN_CRASH=k=v      exit 1 (a crash, traceback-free) when k=v is among the arguments
  FAKE_TRAIN_HANG=k=v       sleep a minute when k=v is among the arguments (to kill a sweep mid-trial)
"""
from __future__ import annotations

import csv
import json
import os
import sys
import time
import zlib
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script, like train.py
from lightning_bert import config  # noqa: E402


def score(args: list[str]) -> float:
    """A fake final loss: depends on every argument but run.seed a lot, on the seed a little."""
    variant = " ".join(a for a in sorted(args) if not a.startswith("run.seed="))
    seed = int(next((a.split("=", 1)[1] for a in args if a.startswith("run.seed=")), "0"))
    return 3.0 + (zlib.crc32(variant.encode()) % 1000) / 1000 + 0.01 * seed


def main(args: list[str]) -> int:
    run_dir = Path(os.environ["LIGHTNING_BERT_RUN_DIR"])
    if os.environ.get("FAKE_TRAIN_CALLS"):
        with open(os.environ["FAKE_TRAIN_CALLS"], "a") as fh:
            keys = ("WANDB_RUN_ID", "WANDB_RUN_GROUP", "WANDB_MODE", "LIGHTNING_BERT_TAGS")
            env = {k: os.environ.get(k) for k in keys}
            fh.write(json.dumps({"run_dir": str(run_dir), "args": args, "env": env}) + "\n")
    cfg = config.to_dict(config.load(args))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    if os.environ.get("FAKE_TRAIN_CRASH") in args:
        print("fake crash", file=sys.stderr)
        return 1
    if os.environ.get("FAKE_TRAIN_HANG") in args:
        time.sleep(60)
    final = score(args)
    steps, tokens_per_step = 4, cfg["trainer"]["batch_size"] * cfg["data"]["max_seq_length"]
    rows = []
    for step in range(1, steps + 1):
        loss = final + (steps - step) * 0.5
        rows.append({"step": step, "tokens_seen": step * tokens_per_step, "train/loss": loss + 0.1,
                     "val/loss": "", "val/mlm_loss": "", "eval/mlm_loss": ""})
        rows.append({"step": step, "tokens_seen": step * tokens_per_step, "train/loss": "",
                     "val/loss": loss + 0.2, "val/mlm_loss": loss, "eval/mlm_loss": loss - 0.1})
    with open(run_dir / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    metrics = {"val/loss": final + 0.2, "val/mlm_loss": final, "val/mlm_acc": 1 / final,
               "eval/mlm_loss": final - 0.1, "eval/mlm_loss_per_char": (final - 0.1) / 4.2, "eval/mlm_acc": 0.9 / final,
               "probe/nsp_acc": 0.5 + final / 10, "probe/nsp_acc_ci95": 0.03, "probe/nsp_n": 1200.0,
               "probe/sop_acc": 0.4 + final / 10, "probe/sop_acc_ci95": 0.03, "probe/sop_n": 1100.0,
               "glue/sst2/acc": final / 5}
    summary = {"status": "finished", "metrics": metrics, "best": dict(metrics), "global_step": steps,
               "tokens_seen": steps * tokens_per_step, "wall_time_s": final * 10, "run_dir": str(run_dir),
               "wandb": {"id": os.environ.get("WANDB_RUN_ID"), "mode": os.environ.get("WANDB_MODE")}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
