"""One console script: `lightning-bert <command> [args]`, with one override parser, one error path, one logging set-up.

    lightning-bert train [experiment=NAME] [key=value ...]    pretrain (same as python train.py)
    lightning-bert sweep SWEEP_YAML [--count N] [--dir DIR]   offline W&B sweep controller
    lightning-bert report SOURCE [--out DIR]                  ablation report (table, plots, HTML)
    lightning-bert finetune ckpt=PATH [tasks=[sst2] ...]      GLUE fine-tuning + zero-shot STS table
    lightning-bert sbert ckpt=PATH [loss=cosent ...]          Sentence-BERT training (+ whitening)
    lightning-bert probe CKPT [max_examples=N ...]            NSP/SOP cross-probe of a checkpoint
    lightning-bert preview [experiment=NAME] [--n 3]          what the model trains on, as text
    lightning-bert export CKPT OUT_DIR [--overwrite] ...      transformers / sentence-transformers directory

Every command: `key=value` OmegaConf dotlist overrides (also `--key value`, `--key=value`, `--flag`
for booleans, positional values in the order the command's --help lists), `--help` lists the keys
with defaults and comments, and a user mistake prints `error: ...` on one line and exits 2.
`python train.py` and `python -m lightning_bert.<command>` run the same code.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import re
import sys
from typing import Callable, Optional, Sequence, TypeVar

from lightning_bert.errors import UserError

T = TypeVar("T")
# command -> module whose main(argv) runs it
COMMANDS = {"train": "lightning_bert.cli:train_main", "sweep": "lightning_bert.sweep:main",
            "report": "lightning_bert.report:main", "finetune": "lightning_bert.finetune:main",
            "sbert": "lightning_bert.sbert:main", "probe": "lightning_bert.probes:main",
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
HELP = ("-h", "--help")


def setup_logging(level: int = logging.INFO) -> None:
    """The one logging set-up: our package logs plain lines to stderr; Lightning keeps its own handlers."""
    logger = logging.getLogger("lightning_bert")
    if not any(getattr(h, "_lightning_bert", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._lightning_bert = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(level)


def fail(err: BaseException) -> int:
    """The one error path: `error: <first line>` on stderr, exit status 2 (or the error's own exit_code)."""
    text = str(err).strip().splitlines()
    print(f"error: {text[0] if text else type(err).__name__}", file=sys.stderr)
    return getattr(err, "exit_code", 2)


def run_main(doc: str, body: Callable[[list[str]], Optional[int]], argv: Optional[Sequence[str]],
             keys: str | Callable[[], str] = "") -> int:
    """Shared main(): --help prints `doc` and the key listing; UserError -> one line, exit 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in HELP for a in argv):
        print(inspect.cleandoc(doc))
        keys = keys() if callable(keys) else keys
        if keys:
            print(f"\n{keys}" if keys.startswith("experiments") else f"\nkeys (default, meaning):\n{keys}")
        return 0
    setup_logging()
    try:
        return body(argv) or 0
    except UserError as err:
        return fail(err)


def describe_schema(cls: type, prefix: str = "") -> str:
    """Every field of a config dataclass with its default and its one-line `# comment` from the source."""
    lines: list[str] = []
    comments = dict(re.findall(r"^\s+(\w+):[^#\n]*#\s*(.*)$", inspect.getsource(cls), re.M))
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default_factory):  # type: ignore[arg-type]
            lines.append(describe_schema(f.default_factory, f"{prefix}{f.name}."))  # type: ignore[arg-type]
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        lines.append(f"  {prefix}{f.name}={default}".ljust(40) + f"  {comments.get(f.name, '')}")
    return "\n".join(lines)


def to_dotlist(cls: type, argv: Sequence[str], positional: Sequence[str] = (),
               passthrough: bool = False) -> tuple[list[str], list[str]]:
    """argv -> (dotlist for `cls`, the rest). `--key value` / `--key=value` / `--flag` (bool) / `key=value`;
    bare values fill `positional` fields in order. With passthrough, unknown key=value items go to the rest
    (e.g. pretraining overrides a command forwards to config.load)."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    dotlist, rest, free = [], [], list(positional)
    items = list(argv)
    while items:
        item = items.pop(0)
        if item.startswith("--"):
            key, _, value = item[2:].partition("=")
            key = key.replace("-", "_")
            if key not in names:
                raise UserError(f"unknown option --{item[2:].split('=')[0]}; allowed: "
                                + ", ".join(f"--{n.replace('_', '-')}" for n in names))
            if not _ and names[key].type in ("bool", bool):
                value = "true"
            elif not _:
                if not items:
                    raise UserError(f"--{key.replace('_', '-')} needs a value")
                value = items.pop(0)
            dotlist.append(_listed(names, key, value))
        elif "=" in item:
            key, value = item.split("=", 1)
            key = key.lstrip("+")
            if key.split(".")[0] in names or not passthrough:
                dotlist.append(_listed(names, key, value))
            else:
                rest.append(item)
        elif free:
            dotlist.append(_listed(names, free.pop(0), item))
        else:
            raise UserError(f"unexpected argument '{item}' (expected key=value)")
    return dotlist, rest


def _listed(names: dict[str, dataclasses.Field], key: str, value: str) -> str:
    """`key=value` with a plain value for a list field meaning a one-item list (`tasks=sst2`)."""
    field = names.get(key)
    is_list = field is not None and str(field.type).startswith(("list", "List"))
    return f"{key}=[{value}]" if is_list and not value.startswith("[") else f"{key}={value}"


def parse(cls: type[T], argv: Sequence[str], positional: Sequence[str] = (), section: str = "",
          passthrough: bool = False) -> tuple[T, list[str]]:
    """The one override parser: a typed dataclass from argv (OmegaConf merge runs its __post_init__ checks).

    Raises UserError naming the key and what is allowed."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

    from lightning_bert.config import ConfigError

    dotlist, rest = to_dotlist(cls, argv, positional, passthrough)
    section = section or cls.__name__
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(cls), OmegaConf.from_dotlist(dotlist))
        return OmegaConf.to_object(cfg), rest  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        key, msg = getattr(err, "full_key", None) or "", str(err).splitlines()[0]
        if isinstance(err, ConfigKeyError) or "not in" in msg:
            allowed = ", ".join(f.name for f in dataclasses.fields(cls))
            raise ConfigError(f"unknown {section} key '{key or msg}'; allowed: {allowed}") from None
        kind = "bad value for" if isinstance(err, ValidationError) else "bad config"
        raise ConfigError(f"{kind} '{key}': {msg}") from None


# Argument schemas of the commands whose options are not a config of their own.


@dataclasses.dataclass
class ProbeArgs:
    ckpt: Optional[str] = None  # checkpoint to probe (first positional); other key=value items are pretraining overrides
    max_examples: Optional[int] = None  # held-out pairs per task (null = all the probe builds)


@dataclasses.dataclass
class PreviewArgs:
    n: int = 3  # examples shown; other key=value items (and experiment=NAME) are pretraining overrides


@dataclasses.dataclass
class SweepArgs:
    sweep_file: Optional[str] = None  # sweep YAML, e.g. sweeps/sentence_task.yaml (first positional)
    count: Optional[int] = None  # stop once the sweep holds N trials (counted across restarts)
    dir: Optional[str] = None  # sweep directory (default sweeps_out/<yaml stem>)


@dataclasses.dataclass
class ReportArgs:
    source: Optional[str] = None  # sweep/run directory, or W&B sweep ENTITY/PROJECT/SWEEP_ID (first positional)
    out: Optional[str] = None  # report folder (default SOURCE/report, or reports/SWEEP_ID for W&B)


def required(value: Optional[T], usage: str) -> T:
    if value is None or value == "":
        raise UserError(f"usage: {usage}")
    return value


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
        from lightning_bert.config import load

        cfg = load(args)
        from lightning_bert.fit import run

        summary = run(cfg)
        if summary:
            print(f"run record: {summary['run_dir']}  (status {summary['status']}, {summary['global_step']} steps)")
        return 0

    def keys() -> str:
        from lightning_bert.config import describe, experiment_names

        return f"experiments: {', '.join(experiment_names())}\n\nkeys (default, meaning):\n{describe()}"

    return run_main(doc, body, argv, keys)


if __name__ == "__main__":
    sys.exit(main())
