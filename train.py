"""Pretrain an encoder: `python train.py [experiment=NAME] [key=value ...]`.

Overrides are OmegaConf dotlists, exactly what `wandb agent` passes via ${args_no_hyphens}.
Examples:
    python train.py                                   # tiny BERT, dynamic MLM, built-in corpus, ~2 min CPU
    python train.py experiment=roberta data.path=../shared/data/wikipedia-en/train.txt
    python train.py trainer.devices=2 trainer.strategy=ddp
    python train.py run.name=my-run run.resume=auto   # continue an interrupted run
    python train.py model.init_from=DIR               # continued pretraining from a transformers directory
"""
import sys

from lightning_bert.cli import train_main


def main(argv: list[str]) -> int:
    return train_main(argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
