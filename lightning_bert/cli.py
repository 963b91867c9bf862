"""The dispatcher on top: `lightning-bert <command> [args]` runs the command module's main(argv).

    lightning-bert train [experiment=NAME] [key=value ...]    pretrain (same as python train.py)
    lightning-bert sweep SWEEP_YAML [--count N] [--dir DIR]   offline W&B sweep controller
    lightning-bert report SOURCE [--out DIR]                  ablation report (table, plots, HTML)
    lightning-bert finetune ckpt=PATH [tasks=[sst2] ...]      GLUE fine-tuning + zero-shot STS table
    lightning-bert sbert ckpt=PATH [loss=cosent ...]          Sentence-BERT training (+ whitening)
    lightning-bert probe CKPT [max_examples=N ...]            NSP/SOP cross-probe of a checkpoint
    lightning-bert preview [experiment=NAME] [--n 3]          what the model trains on, as text
    lightning-bert export CKPT OUT_DIR [--overwrite] ...      transformers / sentence-transformers directory

Every command takes `key=value` overrides and `--help` (lightning_bert/args.py, the one parser).
`python train.py` and `python -m lightning_bert <command>` run the same code.
"""
from __future__ import annotations

import importlib
import inspect
import sys
from typing import Optional, Sequence

from lightning_bert.args import HELP, fail, run_main, to_dotlist
from lightning_bert.errors import UserError

# command -> function main(argv) that runs it
COMMANDS = {"train": "lightning_bert.cli:train_main", "sweep": "lightning_bert.analysis.sweep:main",
            "report": "lightning_bert.analysis.report:main", "finetune": "lightning_bert.eval.finetune:main",
            "sbert": "lightning_bert.eval.sbert:main", "probe": "lightning_bert.eval.probes:main",
            "preview": "lightning_bert.preview:main", "export": "lightning_bert.export:main"}
TRAIN_DOC = """Pretrain an encoder: `python train.py [experiment=NAME] [key=value ...]` (or `lightning-bert train ...`).

Overrides are OmegaConf dotlists, exactly what `wandb agent` passes via ${args_no_hyphens}.
Examples:
    python train.py                                   # tiny BERT, dynamic MLM, built-in corpus, ~2 min CPU
    python train.py experiment=roberta data.path=../shared/data/wikipedia-en/train.txt
    python train.py trainer.devices=2 trainer.strategy=ddp
    python train.py run.name=my-run run.resume=auto   # continue an interrupted run
    python train.py model.init_from=DIR               # continued pretraining from a transformers directory
"""


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in HELP:
        print(inspect.cleandoc(__doc__ or ""))
        return 0 if argv else fail(UserError(f"a command is needed: {', '.join(COMMANDS)}"))
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return fail(UserError(f"unknown command '{command}'; choose one of {', '.join(COMMANDS)}"))
    module, function = COMMANDS[command].split(":")
    return int(getattr(importlib.import_module(module), function)(rest) or 0)


def train_main(argv: Optional[Sequence[str]] = None, doc: str = TRAIN_DOC) -> int:
    """`python train.py` / `lightning-bert train`: config (fails fast, before torch or the corpus) -> fit."""

    def body(args: list[str]) -> int:
        from lightning_bert.config import Config, load

        dotlist, rest = to_dotlist(Config, args, passthrough=True)  # rest: experiment=NAME, unknown keys
        cfg = load(rest + dotlist)
        from lightning_bert.train.fit import run

        summary = run(cfg)
        if summary:
            print(f"run record: {summary['run_dir']}  (status {summary['status']}, {summary['global_step']} steps)")
        return 0

    def keys() -> str:
        from lightning_bert.config import describe, experiment_names

        return f"experiments: {', '.join(experiment_names())}\n\nkeys (default, meaning):\n{describe()}"

    return run_main(doc, body, argv, keys)

