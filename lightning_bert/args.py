"""The bottom of every command: one override parser, one schema describer, one OmegaConf error mapping,
one error path and one logging set-up. It imports no command, so every command (and config.py) may use it.

Every command: `key=value` OmegaConf dotlist overrides (also `--key value`, `--key=value`, `--flag`
for booleans, positional values in the order the command's --help lists), `--help` lists the keys
with defaults and comments, and a user mistake prints `error: ...` on one line and exits 2.
"""
from __future__ import annotations

import dataclasses
import errno
import inspect
import logging
import re
import sys
from typing import Any, Callable, Optional, Sequence, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from lightning_bert.errors import ConfigError, UserError

T = TypeVar("T")
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
    """The one error path: `error: <first line>` on stderr, exit status 2 (or the error's own exit_code:
    a preempted run exits 128 + the signal number, so schedulers requeue it)."""
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
    except OSError as err:
        if err.filename is None:  # not about a path (a socket, a bug): the traceback helps
            raise
        return fail(path_error(err))


def path_error(err: OSError) -> UserError:
    """An OSError about a path (full disk, read-only, missing, forbidden) as one line naming the path. Which
    operation failed is not recorded in the error: a missing path was to be read, a forbidden one accessed,
    anything else (no space, read-only, a directory in the way) written."""
    verb = {errno.ENOENT: "read", errno.EACCES: "access", errno.EPERM: "access"}.get(err.errno or 0, "write")
    return UserError(f"cannot {verb} {err.filename}: {err.strerror or err}")


def describe_schema(cls: type, prefix: str = "") -> str:
    """Every field of a config dataclass (nested ones walked) with its default and its one-line `# comment`
    from the source."""
    lines: list[str] = []
    comments = dict(re.findall(r"^\s+(\w+):[^#\n]*#\s*(.*)$", inspect.getsource(cls), re.M))
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default_factory):  # type: ignore[arg-type]
            lines.append(describe_schema(f.default_factory, f"{prefix}{f.name}."))  # type: ignore[arg-type]
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        lines.append(f"  {prefix}{f.name}={default}".ljust(40) + f"  {comments.get(f.name, '')}")
    return "\n".join(lines)


def _section_of(schema: type, key: str) -> type:
    """The deepest config dataclass on the way to dotted `key` (the schema itself for a top-level key)."""
    node = schema
    for part in key.split(".")[:-1]:
        child = {f.name: f.default_factory for f in dataclasses.fields(node)}.get(part)  # type: ignore[misc]
        if not dataclasses.is_dataclass(child):
            break
        node = child  # type: ignore[assignment]
    return node


def explain(err: OmegaConfBaseException, schema: type, section: str) -> ConfigError:
    """An OmegaConf merge error as one line naming the key and what is allowed there."""
    key = getattr(err, "full_key", None) or ""
    msg = str(err).splitlines()[0]
    if isinstance(err, ConfigKeyError) or "not in" in msg or "Missing key" in msg:
        bad = key or msg
        node = _section_of(schema, bad)
        allowed = ", ".join(f.name for f in dataclasses.fields(node))
        return ConfigError(f"unknown {section} key '{bad}'; allowed{' here' if node is not schema else ''}: {allowed}")
    if isinstance(err, ValidationError):
        return ConfigError(f"bad value for '{key}': {msg}")
    return ConfigError(f"bad config '{key}': {msg}")


def to_dotlist(cls: type, argv: Sequence[str], positional: Sequence[str] = (),
               passthrough: bool = False) -> tuple[list[str], list[str]]:
    """argv -> (dotlist for `cls`, the rest). `--key value` / `--key=value` / `--flag` (bool) / `key=value`,
    keys dotted into nested sections (`--model.size tiny`); bare values fill `positional` fields in order.
    With passthrough, unknown keys go to the rest as `key=value` (e.g. pretraining overrides a command
    forwards to config.load, which names what is allowed)."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    dotlist, rest, free = [], [], list(positional)
    items = list(argv)
    while items:
        item = items.pop(0)
        if item.startswith("--"):
            key, has_value, value = item[2:].partition("=")
            key = key.replace("-", "_")
            field = field_of(cls, key)
            if field is None and not passthrough:
                raise UserError(f"unknown option --{item[2:].split('=')[0]}; allowed: "
                                + ", ".join(f"--{n.replace('_', '-')}" for n in names))
            if not has_value and field is not None and field.type in ("bool", bool):
                value = "true"
            elif not has_value:
                if not items:
                    raise UserError(f"--{key.replace('_', '-')} needs a value")
                value = items.pop(0)
            (dotlist if field is not None else rest).append(_listed(field, key, value))
        elif "=" in item:
            key, value = item.split("=", 1)
            key = key.lstrip("+")
            if key.split(".")[0] in names or not passthrough:
                dotlist.append(_listed(field_of(cls, key), key, value))
            else:
                rest.append(item)
        elif free:
            name = free.pop(0)
            dotlist.append(_listed(names.get(name), name, item))
        else:
            raise UserError(f"unexpected argument '{item}' (expected key=value)")
    return dotlist, rest


def field_of(cls: type, key: str) -> Optional[dataclasses.Field]:
    """The schema field of dotted `key` (nested dataclasses walked), or None when there is none."""
    node: Any = cls
    *sections, name = key.split(".")
    for part in sections:
        child = {f.name: f.default_factory for f in dataclasses.fields(node)}.get(part)  # type: ignore[misc]
        if not dataclasses.is_dataclass(child):
            return None
        node = child
    return {f.name: f for f in dataclasses.fields(node)}.get(name)


def _listed(field: Optional[dataclasses.Field], key: str, value: str) -> str:
    """`key=value` with a plain value for a list field meaning a one-item list (`tasks=sst2`)."""
    is_list = field is not None and str(field.type).startswith(("list", "List"))
    return f"{key}=[{value}]" if is_list and not value.startswith("[") else f"{key}={value}"


def parse(cls: type[T], argv: Sequence[str], positional: Sequence[str] = (), section: str = "",
          passthrough: bool = False) -> tuple[T, list[str]]:
    """The one override parser: a typed dataclass from argv (OmegaConf merge runs its __post_init__ checks).

    Raises UserError naming the key and what is allowed."""
    dotlist, rest = to_dotlist(cls, argv, positional, passthrough)
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(cls), OmegaConf.from_dotlist(dotlist))
        return OmegaConf.to_object(cfg), rest  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        raise explain(err, cls, section or cls.__name__) from None


def required(value: Optional[T], usage: str) -> T:
    if value is None or value == "":
        raise UserError(f"usage: {usage}")
    return value


# Argument schemas of the commands whose options are not a config of their own.


@dataclasses.dataclass
class ProbeArgs:
    ckpt: Optional[str] = None  # checkpoint to probe (first positional); other key=value items are pretraining overrides
    max_examples: Optional[int] = None  # held-out pairs per task (null = all the probe builds)

    def __post_init__(self) -> None:
        if self.max_examples is not None and self.max_examples < 1:  # a probe of 0 pairs fits nothing
            raise ConfigError(f"probe.max_examples={self.max_examples} is out of range; it must be >= 1 "
                              "(null = all pairs)")


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
