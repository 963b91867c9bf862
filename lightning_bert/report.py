"""Ablation report: one row per variant (mean ± std over seeds), loss curves, bar charts, one HTML page.

    python -m lightning_bert.report SOURCE [--out DIR]

SOURCE is a sweep directory (sweeps_out/NAME), any directory holding run directories with
summary.json, or a W&B sweep path ENTITY/PROJECT/SWEEP_ID (read through the W&B public API).
Both readers produce the same RunRecords; everything after reading works on those alone.
"""
from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from lightning_bert.errors import UserError
from lightning_bert.sweep import STATE_FILE
CURVE_METRIC = "val/mlm_loss"
NOT_A_VARIANT = ("run.seed", "run.name", "run.output_dir", "run.resume", "logger.")  # differ per run anyway
METRIC_ORDER = ("val/", "probe/", "glue/", "sts/")


class ReportError(UserError):
    """A report source that cannot be read."""


@dataclass
class RunRecord:
    """One run, as read from a local run directory or from W&B."""

    name: str
    status: str  # finished | failed | crashed | interrupted | running ...
    params: dict[str, Any]  # the sweep parameters of this run (dotted keys); {} when unknown
    config: dict[str, Any]  # the resolved config, flattened to dotted keys
    metrics: dict[str, float]  # final values
    best: dict[str, float] = field(default_factory=dict)
    tokens_seen: Optional[float] = None
    wall_time_s: Optional[float] = None
    history: list[dict[str, float]] = field(default_factory=list)  # rows: tokens_seen, val/mlm_loss, ...
    group: str = ""  # the sweep / W&B group name


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        nested = isinstance(value, dict) and value
        out.update(flatten(value, f"{prefix}{key}.") if nested else {f"{prefix}{key}": value})
    return out


def read_run_dir(run_dir: Path, name: str = "", params: Optional[dict] = None, status: str = "unknown",
                 group: str = "") -> RunRecord:
    """A run directory written by train.py: config.yaml, metrics.csv, summary.json (any may be missing)."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):  # a run that died before writing it, or mid-write
        summary = {}
    try:
        config = flatten(yaml.safe_load((run_dir / "config.yaml").read_text()) or {})
    except (OSError, yaml.YAMLError):
        config = {}
    history: list[dict[str, float]] = []
    if (run_dir / "metrics.csv").is_file():  # Lightning CSVLogger: numbers, empty where not logged
        with open(run_dir / "metrics.csv", newline="") as fh:
            history = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(fh)]
    return RunRecord(name=name or run_dir.name, status=summary.get("status") or status, params=dict(params or {}),
                     config=config, metrics=summary.get("metrics", {}), best=summary.get("best", {}),
                     tokens_seen=summary.get("tokens_seen"), wall_time_s=summary.get("wall_time_s"), history=history,
                     group=group)


def read_local(source: Path) -> list[RunRecord]:
    """Trials of every sweep state file under `source` (with their parameters), then any other run dir."""
    records, seen = [], set()
    states = [(path, json.loads(path.read_text())) for path in source.rglob(STATE_FILE)]
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


def read_wandb(path: str) -> list[RunRecord]:
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
            history = run.history(keys=["tokens_seen", CURVE_METRIC], pandas=False)
            records.append(RunRecord(
                name=run.name or run.id, status=run.state, params={k: config[k] for k in keys if k in config},
                config=config, metrics=final, best=best, tokens_seen=summary.get("tokens_seen"),
                wall_time_s=summary.get("wall_time_s", summary.get("_runtime")), history=list(history),
                group=run.group or ""))
    except Exception as err:  # wandb raises several types (CommError, ValueError, HTTPError)
        raise ReportError(f"cannot read W&B sweep {path}: {' '.join(str(err).split())}") from None
    return records


def _value(record: RunRecord, key: str) -> Any:
    if key in record.params:
        return record.params[key]
    return record.config.get(key, record.config.get(f"run.{key}"))  # sweep key `experiment` = run.experiment


def variant_keys(records: list[RunRecord]) -> list[str]:
    """The varied settings other than the seed: sweep parameters if known, else config differences."""
    def varies(key: str) -> bool:
        return len({json.dumps(_value(r, key), sort_keys=True, default=str) for r in records}) > 1

    keys = list(dict.fromkeys(k for r in records for k in r.params))
    if not keys:
        keys = sorted({k for r in records for k in r.config})
    return [k for k in keys if not k.startswith(NOT_A_VARIANT) and varies(k)]


def group_variants(records: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """Finished runs by variant label, in order of first appearance (the sweep's order)."""
    done = [r for r in records if r.status == "finished"]
    keys = variant_keys(done)
    groups: dict[str, list[RunRecord]] = {}
    for record in done:
        label = ", ".join(f"{k}={_value(record, k)}" for k in keys) or "all runs"
        groups.setdefault(label, []).append(record)
    return groups


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single seed)."""
    values = list(values)
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def metric_names(records: Iterable[RunRecord]) -> list[str]:
    """Held-out metrics only (val/, probe/, glue/, sts/): last-batch train/* values are noise, not results."""
    names = {k for r in records for k, v in r.metrics.items()
             if isinstance(v, (int, float)) and k.startswith(METRIC_ORDER)}
    rank = {n: next(i for i, p in enumerate(METRIC_ORDER) if n.startswith(p)) for n in names}
    return sorted(names, key=lambda n: (rank[n], n))


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def table_rows(groups: dict[str, list[RunRecord]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: variant, seeds, mean ± std of each metric, tokens seen, wall time."""
    metrics = metric_names(r for runs in groups.values() for r in runs)
    header = ["variant", "seeds", *metrics, "tokens seen", "wall time (s)"]
    rows = []
    for label, runs in groups.items():
        cells = [label, str(len(runs))]
        for metric in metrics:
            values = [r.metrics[metric] for r in runs if isinstance(r.metrics.get(metric), (int, float))]
            cells.append("–" if not values else "{} ± {}".format(*map(_fmt, mean_std(values))))
        for attr in ("tokens_seen", "wall_time_s"):
            values = [getattr(r, attr) for r in runs if getattr(r, attr) is not None]
            cells.append(_fmt(statistics.fmean(values)) if values else "–")
        rows.append(cells)
    return header, rows


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_curves(groups: dict[str, list[RunRecord]], path: Path, metric: str = CURVE_METRIC) -> Optional[Path]:
    """Validation MLM loss against tokens seen: mean line and ± std band over seeds, per variant."""
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for label, runs in groups.items():
        curves = [[(row["tokens_seen"], row[metric]) for row in r.history if "tokens_seen" in row and metric in row]
                  for r in runs]
        curves = [np.array(sorted(c)) for c in curves if c]
        if not curves:
            continue
        grid = np.unique(np.concatenate([c[:, 0] for c in curves]))
        # Only where every seed has data: past one seed's end the mean would jump to the others' values.
        grid = grid[(grid >= max(c[0, 0] for c in curves)) & (grid <= min(c[-1, 0] for c in curves))]
        ys = np.array([np.interp(grid, c[:, 0], c[:, 1], left=np.nan, right=np.nan) for c in curves])
        n = np.sum(~np.isnan(ys), axis=0)
        mean = np.nanmean(ys, axis=0)
        std = np.sqrt(np.nansum((ys - mean) ** 2, axis=0) / np.maximum(n - 1, 1))
        ax.plot(grid, mean, label=f"{label} (n={len(curves)})")
        ax.fill_between(grid, mean - std, mean + std, alpha=0.2)
        drawn = True
    if drawn:
        ax.set(xlabel="training tokens", ylabel=metric, title=f"{metric} vs tokens (mean ± std over seeds)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return path if drawn else None


def plot_bars(groups: dict[str, list[RunRecord]], metrics: list[str], path: Path, title: str) -> Optional[Path]:
    """One panel per metric, one bar per variant, error bar = std over seeds."""
    if not metrics:
        return None
    plt = _plt()
    cols = min(len(metrics), 3)
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.8 * rows), squeeze=False)
    labels = list(groups)
    for ax, metric in zip(axes.flat, metrics):
        stats = [mean_std([r.metrics[metric] for r in groups[lb] if metric in r.metrics] or [float("nan")])
                 for lb in labels]
        ax.bar(range(len(labels)), [m for m, _ in stats], yerr=[s for _, s in stats], capsize=4, color="tab:blue")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
        ax.set_title(metric, fontsize=9)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(records: list[RunRecord], out_dir: Path, title: str) -> Path:
    """Write report.md, report.html and the PNG plots into out_dir; return the HTML path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = group_variants(records)
    header, rows = table_rows(groups)
    left_out = [r for r in records if r.status != "finished"]
    by_status = {s: sum(r.status == s for r in left_out) for s in sorted({r.status for r in left_out})}
    note = f"{len(records) - len(left_out)} finished runs in {len(groups)} variants."
    if left_out:
        note += (f" {len(left_out)} runs not finished are left out of the table ("
                 + ", ".join(f"{n} {s}" for s, n in by_status.items()) + ").")
    metrics = metric_names(r for runs in groups.values() for r in runs)
    plots = [p for p in (
        plot_curves(groups, out_dir / "val_mlm_loss_vs_tokens.png"),
        plot_bars(groups, [m for m in metrics if m.startswith("val/")], out_dir / "final_metrics.png",
                  "final validation metrics"),
        plot_bars(groups, [m for m in metrics if m.startswith("probe/")], out_dir / "probe_accuracy.png",
                  "NSP / SOP probe accuracy"),
        plot_bars(groups, [m for m in metrics if m.startswith(("glue/", "sts/"))], out_dir / "downstream.png",
                  "downstream metrics"),
    ) if p is not None]
    md = [f"# {title}", "", note, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(row) + " |" for row in rows]
    md += [""] + [f"![{p.stem}]({p.name})" for p in plots]
    (out_dir / "report.md").write_text("\n".join(md) + "\n")
    esc = html.escape
    cells = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    images = "".join(f'<h2>{esc(p.stem)}</h2><img alt="{esc(p.stem)}" src="data:image/png;base64,'
                     f'{base64.b64encode(p.read_bytes()).decode()}">' for p in plots)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>"
            "body{font-family:sans-serif} table{border-collapse:collapse} td,th{border:1px solid #bbb;"
            f"padding:3px 8px}}</style></head><body><h1>{esc(title)}</h1><p>{esc(note)}</p>"
            f"<table><tr>{cells}</tr>{body}</table>{images}</body></html>")
    (out_dir / "report.html").write_text(page)
    return out_dir / "report.html"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Summarise an ablation: table, plots and HTML per variant.")
    parser.add_argument("source", help="sweep/run directory, or W&B sweep ENTITY/PROJECT/SWEEP_ID")
    parser.add_argument("--out", help="report folder (default SOURCE/report, or reports/SWEEP_ID for W&B)")
    args = parser.parse_args(argv)
    try:
        source = Path(args.source)
        if source.is_dir():
            records, out = read_local(source), Path(args.out or source / "report")
        elif re.fullmatch(r"[\w.-]+/[\w.-]+/\w+", args.source):
            records, out = read_wandb(args.source), Path(args.out or Path("reports") / source.name)
        else:
            raise ReportError(f"{args.source} is neither a directory nor a W&B sweep path ENTITY/PROJECT/SWEEP_ID")
        if not records:
            raise ReportError(f"no run records (summary.json or {STATE_FILE}) found in {args.source}")
        groups = ", ".join(dict.fromkeys(r.group for r in records if r.group)) or source.resolve().name
        page = write_report(records, out, f"Ablation report: {groups}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report written to {page} ({len(records)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
