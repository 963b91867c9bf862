"""Pretrain an encoder: `python train.py [experiment=NAME] [key=value ...]`.

Overrides are OmegaConf dotlists, exactly what `wandb agent` passes via ${args_no_hyphens}.
Examples:
    python train.py                                   # tiny BERT, dynamic MLM, built-in corpus, ~2 min CPU
    python train.py experiment=roberta data.path=../shared/data/wikipedia-en/train.txt
    python train.py trainer.devices=2 trainer.strategy=ddp
    python train.py run.name=my-run run.resume=auto   # continue an interrupted run
"""
import logging
import sys

from lightning_bert.config import ConfigError, describe, experiment_names, load
from lightning_bert.errors import UserError


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        print(f"experiments: {', '.join(experiment_names())}\n\nkeys (default, meaning):\n{describe()}")
        return 0
    try:
        cfg = load(argv)  # fails fast on bad keys/values, before torch or the corpus is touched
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logging.getLogger("lightning_bert").addHandler(handler)  # Lightning keeps its own handlers
        logging.getLogger("lightning_bert").setLevel(logging.INFO)
        from lightning_bert.fit import run

        summary = run(cfg)
    except (ConfigError, UserError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if summary:
        print(f"run record: {summary['run_dir']}  (status {summary['status']}, {summary['global_step']} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
