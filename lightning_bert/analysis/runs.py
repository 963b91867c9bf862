"""Run records as read back: a run directory (config.yaml, metrics.csv, summary.json, written by
runrecord.RunRecorder), every trial of a sweep directory, or a W&B sweep. Both readers produce the same
RecordedRuns; tables, plots and the report work on those alone."""
from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from lightning_bert.errors import UserError

log = logging.getLogger(__name__)
STATE_FILE = "sweep_state.json"  # a sweep directory's trials (written by the sweep controller)
CURVE_METRIC, FALLBACK_CURVE = "eval/mlm_loss", "val/mlm_loss"  # the loss curve, if a run logs it; else its own


class ReportError(UserError):
    """A report source that cannot be read."""


@dataclass
class RecordedRun:
    """One run, as read from a local run directory or from W&B."""

    name: str
    status: str  # finished | failed | crashed | interrupted | running ...
    params: dict[str, Any]  # the sweep parameters of this run (dotted keys); {} when unknown
    config: dict[str, Any]  # the resolved config, flattened to dotted keys
    metrics: dict[str, float]  # final values
    best: dict[str, float] = field(default_factory=dict)
    tokens_seen: Optional[float] = None
    global_step: Optional[float] = None  # optimizer steps
    wall_time_s: Optional[float] = None
    history: list[dict[str, float]] = field(default_factory=list)  # rows: tokens_seen, val/mlm_loss, ...
    group: str = ""  # the sweep / W&B group name


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        nested = isinstance(value, dict) and value
        out.update(flatten(value, f"{prefix}{key}.") if nested else {f"{prefix}{key}": value})
    return out


def read_summary(run_dir: Path) -> dict[str, Any]:
    """summary.json of a run directory; {} for a run that died before writing it, or mid-write."""
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def complete_rows(path: Path) -> tuple[list[str], list[dict[str, str]], bool]:
    """(header, rows, torn) of metrics.csv up to its last complete row: one cut off by a kill or a full
    disk (no newline, too few fields, not a number) ends the rows, with one notice."""
    with open(path, newline="") as fh:
        text = fh.read()
    lines = list(csv.reader(io.StringIO(text)))
    header, body = (lines[0], lines[1:]) if lines else ([], [])
    torn = bool(body) and not text.endswith("\n")  # the writer ends every row with a newline
    body = body[:-1] if torn else body
    rows = []
    for fields in body:
        if len(fields) != len(header) or not all(_is_number(v) for v in fields if v):
            torn = True
            break
        rows.append(dict(zip(header, fields)))
    if torn:
        log.warning("%s: the last row is cut off (an interrupted write); read its %d complete rows", path, len(rows))
    return header, rows, torn


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def read_metrics(path: Path) -> list[dict[str, float]]:
    """metrics.csv (Lightning CSVLogger: numbers, empty where not logged) as rows of floats."""
    return [{k: float(v) for k, v in row.items() if v} for row in complete_rows(path)[1]]


def read_state(path: Path) -> dict[str, Any]:
    """A sweep state file. One cut off mid-write (written by a version that did not replace it atomically,
    or copied half) keeps its head and every complete trial, with one notice; a head that cannot be read
    raises ReportError."""
    text = path.read_text()
    try:
        return json.loads(text)
    except ValueError:
        pass
    head, mark, tail = text.partition('"trials": [')
    try:
        state = json.loads(head + mark + "]}") if mark else None
    except ValueError:
        state = None
    if not isinstance(state, dict):
        raise ReportError(f"{path} is cut off before its trials and cannot be read; move it away to start afresh")
    decoder, pos = json.JSONDecoder(), 0
    while True:
        pos += len(tail[pos:]) - len(tail[pos:].lstrip(" \n\t,"))
        try:
            trial, pos = decoder.raw_decode(tail, pos)
        except ValueError:
            break
        if not isinstance(trial, dict):
            break
        state["trials"].append(trial)
    log.warning("%s is cut off (an interrupted write); read its %d complete trials", path, len(state["trials"]))
    return state


def read_run_dir(run_dir: Path, name: str = "", params: Optional[dict] = None, status: str = "unknown",
                 group: str = "") -> RecordedRun:
    """A run directory written by train.py: config.yaml, metrics.csv, summary.json (any may be missing)."""
    summary = read_summary(run_dir)
    try:
        config = flatten(yaml.safe_load((run_dir / "config.yaml").read_text()) or {})
    except (OSError, yaml.YAMLError):
        config = {}
    history = read_metrics(run_dir / "metrics.csv") if (run_dir / "metrics.csv").is_file() else []
    return RecordedRun(name=name or run_dir.name, status=summary.get("status") or status, params=dict(params or {}),
                       config=config, metrics=summary.get("metrics", {}), best=summary.get("best", {}),
                       tokens_seen=summary.get("tokens_seen"), global_step=summary.get("global_step"),
                       wall_time_s=summary.get("wall_time_s"), history=history,
                       group=group)


def read_local(source: Path) -> list[RecordedRun]:
    """Trials of every sweep state file under `source` (with their parameters), then any other run dir."""
    records, seen = [], set()
    states = [(path, read_state(path)) for path in source.rglob(STATE_FILE)]
    for state_path, state in sorted(states, key=lambda s: min([t["started_at"] for t in s[1]["trials"]] or [0])):
        for trial in state["trials"]:
            run_dir = state_path.parent / "runs" / trial["id"]
            records.append(read_run_dir(run_dir, trial["id"], trial["params"], trial["state"], state["name"]))
            seen.add(run_dir.resolve())
    for summary in sorted(source.rglob("summary.json")):
        if summary.parent.resolve() not in seen:
            records.append(read_run_dir(summary.parent))
    return records


def _split_summary(summary: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """W&B summary -> (final, best): plain numbers, `best/<name>` keys, or define_metric dicts."""
    final, best = {}, {}
    for key, value in summary.items():
        if key.startswith(("_", "trainer/")) or "/" not in key:  # W&B internals, step counters, tokens_seen
            continue
        if isinstance(value, dict):
            final.update({key: value["last"]} if "last" in value else {})
            best.update({key: value[k] for k in ("min", "max", "best") if k in value})
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            (best if key.startswith("best/") else final)[key.removeprefix("best/")] = value
    return final, best


def read_wandb(path: str) -> list[RecordedRun]:
    """Runs of a W&B sweep ENTITY/PROJECT/SWEEP_ID through the public API (needs a login)."""
    import wandb  # lazy: heavy, and only needed online

    try:
        sweep = wandb.Api().sweep(path)
        keys = list((sweep.config or {}).get("parameters", {}))
        records = []
        for run in sweep.runs:
            config = flatten(dict(run.config))
            summary = dict(run.summary._json_dict)
            final, best = _split_summary(summary)
            history = run.history(keys=["tokens_seen", CURVE_METRIC, FALLBACK_CURVE], pandas=False)
            records.append(RecordedRun(
                name=run.name or run.id, status=run.state, params={k: config[k] for k in keys if k in config},
                config=config, metrics=final, best=best, tokens_seen=summary.get("tokens_seen"),
                global_step=summary.get("trainer/global_step", summary.get("_step")),
                wall_time_s=summary.get("wall_time_s", summary.get("_runtime")), history=list(history),
                group=run.group or ""))
    except Exception as err:  # wandb raises several types (CommError, ValueError, HTTPError)
        raise ReportError(f"cannot read W&B sweep {path}: {' '.join(str(err).split())}") from None
    return records


def metric_values(runs: list[RecordedRun], metric: str) -> list[float]:
    """The runs' final values of `metric`, where they have one."""
    return [float(r.metrics[metric]) for r in runs if isinstance(r.metrics.get(metric), (int, float))]
