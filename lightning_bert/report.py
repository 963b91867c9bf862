"""Ablation report: one row per variant (mean ± std over seeds, the canonical eval/mlm_loss first), Welch's
t-test between every pair of variants, the settings held constant, curves and point plots, one HTML page.

    python -m lightning_bert.report SOURCE [--out DIR]

SOURCE is a sweep directory (sweeps_out/NAME), any directory holding run directories with
summary.json, or a W&B sweep path ENTITY/PROJECT/SWEEP_ID (read through the W&B public API).
Both readers produce the same RunRecords; everything after reading works on those alone.
"""
from __future__ import annotations

import base64
import csv
import html
import itertools
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from lightning_bert.errors import UserError
from lightning_bert.stats import at_chance, fmt_comparison, fmt_mean_std, mean_std
from lightning_bert.sweep import STATE_FILE

CURVE_METRIC, FALLBACK_CURVE = "eval/mlm_loss", "val/mlm_loss"
NOT_A_VARIANT = ("run.seed", "run.name", "run.output_dir", "run.resume", "logger.", "data.cache_dir")
METRIC_ORDER = ("eval/", "val/", "probe/", "glue/", "sts/")
CANONICAL = ("eval/mlm_loss", "eval/mlm_loss_per_char", "eval/mlm_acc")  # the same inputs for every variant
PER_TOKEN = ("eval/mlm_loss", "eval/mlm_acc", "val/mlm_loss", "val/mlm_acc", "val/loss", "val/perplexity")
PROBE_DETAILS = ("_ci95", "_n", "_fit_n")  # shown beside a probe accuracy, not as columns
TOKENIZER_KEYS = ("tokenizer.kind", "tokenizer.vocab_size", "tokenizer.lowercase", "tokenizer.path")


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
                     tokens_seen=summary.get("tokens_seen"), global_step=summary.get("global_step"),
                     wall_time_s=summary.get("wall_time_s"), history=history,
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
            history = run.history(keys=["tokens_seen", CURVE_METRIC, FALLBACK_CURVE], pandas=False)
            records.append(RunRecord(
                name=run.name or run.id, status=run.state, params={k: config[k] for k in keys if k in config},
                config=config, metrics=final, best=best, tokens_seen=summary.get("tokens_seen"),
                global_step=summary.get("trainer/global_step", summary.get("_step")),
                wall_time_s=summary.get("wall_time_s", summary.get("_runtime")), history=list(history),
                group=run.group or ""))
    except Exception as err:  # wandb raises several types (CommError, ValueError, HTTPError)
        raise ReportError(f"cannot read W&B sweep {path}: {' '.join(str(err).split())}") from None
    return records


def _value(record: RunRecord, key: str) -> Any:
    if key in record.params:
        return record.params[key]
    return record.config.get(key, record.config.get(f"run.{key}"))  # sweep key `experiment` = run.experiment


def _same(values: Iterable[Any]) -> bool:
    return len({json.dumps(v, sort_keys=True, default=str) for v in values}) <= 1


def variant_keys(records: list[RunRecord]) -> list[str]:
    """The varied settings other than the seed: sweep parameters if known, else config differences."""
    keys = list(dict.fromkeys(k for r in records for k in r.params))
    if not keys:
        keys = sorted({k for r in records for k in r.config})
    return [k for k in keys if not k.startswith(NOT_A_VARIANT) and not _same(_value(r, k) for r in records)]


def group_variants(records: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """Finished runs by variant label, in order of first appearance (the sweep's order)."""
    done = [r for r in records if r.status == "finished"]
    keys = variant_keys(done)
    groups: dict[str, list[RunRecord]] = {}
    for record in done:
        label = ", ".join(f"{k}={_value(record, k)}" for k in keys) or "all runs"
        groups.setdefault(label, []).append(record)
    return groups


def held_constant(groups: dict[str, list[RunRecord]]) -> list[str]:
    """`key=value` of every config setting that all compared runs share (the seed and paths excepted)."""
    runs = [r for rs in groups.values() for r in rs]
    keys = sorted({k for r in runs for k in r.config} | {k for r in runs for k in r.params})
    return [f"{k}={_value(runs[0], k)}" for k in keys
            if not k.startswith(NOT_A_VARIANT) and _same(_value(r, k) for r in runs)] if runs else []


def tokenizers_differ(groups: dict[str, list[RunRecord]]) -> bool:
    """Per-token losses of runs with different vocabularies are not comparable."""
    runs = [r for rs in groups.values() for r in rs]
    return any(not _same(r.config.get(k) for r in runs) for k in TOKENIZER_KEYS)


def all_metric_names(records: Iterable[RunRecord]) -> list[str]:
    """Held-out metrics only (eval/, val/, probe/, glue/, sts/), the canonical eval/mlm_loss first; a
    probe's interval and counts go beside its accuracy, not in columns of their own."""
    names = {k for r in records for k, v in r.metrics.items()
             if isinstance(v, (int, float)) and k.startswith(METRIC_ORDER) and not k.endswith(PROBE_DETAILS)}
    rank = {n: (CANONICAL.index(n) if n in CANONICAL else len(CANONICAL),
                next(i for i, p in enumerate(METRIC_ORDER) if n.startswith(p)), n) for n in names}
    return sorted(names, key=rank.__getitem__)


def metric_names(records: Iterable[RunRecord]) -> list[str]:
    """all_metric_names without the copies (metric_copies): each number once."""
    records = list(records)
    ordered = all_metric_names(records)
    copies = metric_copies(records, ordered)
    return [n for n in ordered if n not in copies]


def metric_copies(records: Iterable[RunRecord], names: list[str]) -> dict[str, str]:
    """{copy: original} for metrics that equal an earlier one in every run (e.g. sts/mean_norm/* = sts/mean/*:
    cosine ignores length), so tables and plots show each number once."""
    records = list(records)
    copies: dict[str, str] = {}
    for i, name in enumerate(names):
        for original in names[:i]:
            if original not in copies and all(
                    (name in r.metrics) == (original in r.metrics)
                    and math.isclose(r.metrics.get(name, 0.0), r.metrics.get(original, 0.0), rel_tol=1e-9, abs_tol=1e-12)
                    for r in records):
                copies[name] = original
                break
    return copies


def is_headline(metric: str) -> bool:
    """Metrics in the main table, compared pairwise: canonical eval, probe accuracies, the GLUE average."""
    return metric.startswith("eval/") or metric == "glue/avg" or (metric.startswith("probe/") and metric.endswith("_acc"))


def _values(runs: list[RunRecord], metric: str) -> list[float]:
    return [float(r.metrics[metric]) for r in runs if isinstance(r.metrics.get(metric), (int, float))]


def _probe_task(metric: str) -> str:
    return metric.split("/", 1)[1].split("_", 1)[0]  # probe/sop_head_acc -> sop


def column_header(groups: dict[str, list[RunRecord]], metric: str) -> str:
    """Probe columns carry their test count and the widest per-run 95% interval."""
    if not metric.startswith("probe/"):
        return metric
    runs = [r for rs in groups.values() for r in rs]
    counts = {int(r.metrics[f"probe/{_probe_task(metric)}_n"]) for r in runs if f"probe/{_probe_task(metric)}_n" in r.metrics}
    ci = _values(runs, metric + "_ci95")
    if not ci:
        return metric
    n = f"n={min(counts)}" if len(counts) == 1 else f"n={min(counts)}-{max(counts)}" if counts else ""
    return f"{metric} ({n}, 95% CI ≤ ±{max(ci):.2g})"


def cell(runs: list[RunRecord], metric: str, per_token_marked: bool) -> str:
    values = _values(runs, metric)
    if not values:
        return "–"
    text = fmt_mean_std(values)
    if metric.startswith("probe/") and metric.endswith("_acc"):
        ci = _values(runs, metric + "_ci95")
        if not ci:
            return text + " (no interval)"
        if at_chance(values, ci):
            text += " ≈ chance"
    if per_token_marked and metric in PER_TOKEN:
        text += " †"
    return text


def _mean(runs: list[RunRecord], attr: str) -> list[float]:
    return [float(getattr(r, attr)) for r in runs if getattr(r, attr) is not None]


def _fmt_count(values: list[float]) -> str:
    """Mean count: 2.05M, 30,720; with its range when the seeds differ."""
    if not values:
        return "–"

    def fmt(x: float) -> str:
        return f"{x / 1e6:.3g}M" if x >= 1e6 else f"{x:,.0f}"

    mean = statistics.fmean(values)
    return fmt(mean) if _same(values) else f"{fmt(mean)} ({fmt(min(values))}-{fmt(max(values))})"


def table_rows(groups: dict[str, list[RunRecord]], headline: bool = True) -> tuple[list[str], list[list[str]]]:
    """Main table: variant, seeds, the canonical and headline metrics (mean ± std over seeds, rounded to the
    spread), tokens seen, optimizer steps, wall time. headline=False: the same for every other metric."""
    metrics = [m for m in metric_names(r for runs in groups.values() for r in runs) if is_headline(m) == headline]
    marked = tokenizers_differ(groups)
    header = ["variant", "seeds", *(column_header(groups, m) for m in metrics)]
    if headline:
        header += ["tokenizer"] * marked + ["tokens seen", "steps", "wall time (s)"]
    rows = []
    for label, runs in groups.items():
        row = [label, str(len(runs)), *(cell(runs, m, marked) for m in metrics)]
        if headline:
            if marked:
                row.append(" ".join(str(runs[0].config.get(k)) for k in TOKENIZER_KEYS[:2]))
            walls = _mean(runs, "wall_time_s")
            row += [_fmt_count(_mean(runs, "tokens_seen")), _fmt_count(_mean(runs, "global_step")),
                    f"{statistics.fmean(walls):.0f}" if walls else "–"]
        rows.append(row)
    return header, rows


def comparison_rows(groups: dict[str, list[RunRecord]]) -> tuple[list[str], list[list[str]]]:
    """Every pair of variants, every headline metric: Welch's t-test p-value of the difference over seeds,
    or "within noise". Per-token losses are left out when the tokenizers differ."""
    marked = tokenizers_differ(groups)
    metrics = [m for m in metric_names(r for runs in groups.values() for r in runs)
               if is_headline(m) and not (marked and m in PER_TOKEN)]
    rows = []
    for a, b in itertools.combinations(groups, 2):
        row = [f"{b} vs {a}"]
        for metric in metrics:
            va, vb = _values(groups[a], metric), _values(groups[b], metric)
            row.append(fmt_comparison(va, vb) if va and vb else "–")
        rows.append(row)
    return ["comparison (B vs A: Δ = B - A)", *metrics], rows


def _short_labels(groups: dict[str, list[RunRecord]]) -> tuple[list[str], str]:
    """Variant labels without their keys (for plot axes) and the keys (for the title)."""
    labels = list(groups)
    parts = [[item.split("=", 1) for item in label.split(", ")] for label in labels]
    if all(len(p) == len(parts[0]) and all(len(kv) == 2 for kv in p) for p in parts):
        return [", ".join(kv[1] for kv in p) for p in parts], ", ".join(kv[0] for kv in parts[0])
    return labels, ""


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def curve_metric(groups: dict[str, list[RunRecord]]) -> str:
    """The canonical eval/mlm_loss where runs log it, else their own val/mlm_loss."""
    rows = (row for runs in groups.values() for r in runs for row in r.history)
    return CURVE_METRIC if any(CURVE_METRIC in row for row in rows) else FALLBACK_CURVE


def plot_curves(groups: dict[str, list[RunRecord]], path: Path, metric: Optional[str] = None) -> Optional[Path]:
    """Held-out MLM loss against tokens seen: mean line and ± std band over seeds, per variant."""
    import numpy as np

    metric = metric or curve_metric(groups)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.2))
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
        ax.plot(grid, mean, marker="." if len(grid) < 30 else None, label=f"{label} (n={len(curves)})")
        ax.fill_between(grid, mean - std, mean + std, alpha=0.2)
        drawn = True
    if drawn:
        ax.set(xlabel="training tokens", ylabel=metric, title=f"{metric} vs tokens (mean ± std over seeds)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return path if drawn else None


def plot_points(groups: dict[str, list[RunRecord]], metrics: list[str], path: Path, title: str) -> Optional[Path]:
    """One panel per metric: each variant's seeds (small dots) and mean ± std (point and error bar) on an
    axis fitted to the data, never stretched to 0. Probe panels mark chance (0.5). At most 12 inches wide
    at 100 dpi, so the page fits a 1280-pixel window."""
    if not metrics:
        return None
    plt = _plt()
    labels, keys = _short_labels(groups)
    cols = min(len(metrics), 3)
    rows = -(-len(metrics) // cols)
    height = 0.9 + 0.32 * len(labels)
    fig, axes = plt.subplots(rows, cols, figsize=(12, height * rows + 0.6), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for i, label in enumerate(groups):
            values = _values(groups[label], metric)
            if not values:
                continue
            mean, std = mean_std(values)
            ci = _values(groups[label], metric + "_ci95")
            if ci:  # a probe's 95% test-set interval, behind the seed spread
                ax.errorbar([mean], [i], xerr=[statistics.fmean(ci)], fmt="none", ecolor="tab:orange", alpha=0.45,
                            elinewidth=7, zorder=0)
            ax.plot(values, [i] * len(values), "o", color="0.6", markersize=3, zorder=1)
            ax.errorbar([mean], [i], xerr=[std], fmt="o", color="tab:blue", capsize=4, zorder=2)
        if metric.startswith("probe/"):
            ax.axvline(0.5, color="tab:red", linestyle="--", linewidth=1, label="chance")
            ax.set_title(f"{metric} (orange: 95% test interval)", fontsize=9)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_ylim(-0.6, len(labels) - 0.4)
        ax.invert_yaxis()  # the table's order, top to bottom
        ax.margins(x=0.15)
        ax.tick_params(axis="x", labelsize=8)
        if not metric.startswith("probe/"):
            ax.set_title(metric, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle(f"{title} ({keys})" if keys else title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _html_cell(text: str) -> str:
    """A number and its spread never break apart; a flag may go to the next line."""
    return html.escape(text).replace(" ± ", "\u00a0±\u00a0").replace("Δ ", "Δ\u00a0")


def _html_table(header: list[str], rows: list[list[str]], labels: dict[str, str], keys: str) -> str:
    """Like the Markdown table, with variant labels shortened to their values (the keys in the header)."""
    def short(text: str) -> str:
        for long, value in labels.items():
            text = text.replace(long, value)
        return text

    first = f"{header[0]} ({keys})" if keys else header[0]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in [first, *header[1:]])
    body = "".join("<tr>" + "".join(f"<td>{_html_cell(short(c) if k == 0 else c)}</td>" for k, c in enumerate(row))
                   + "</tr>" for row in rows)
    return f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>"


PAGE_STYLE = ("body{font-family:sans-serif;max-width:1220px;margin:0 auto;padding:0 12px;font-size:14px}"
              "table{border-collapse:collapse;font-size:12.5px} td,th{border:1px solid #bbb;padding:3px 5px}"
              "th{background:#f2f2f2;font-weight:600} .scroll{overflow-x:auto;max-width:100%}"
              "img{max-width:100%;height:auto} .note{color:#a33} ul.constant{columns:3;font-size:12px;"
              "font-family:monospace} h2{font-size:17px;margin-top:22px}")


def write_report(records: list[RunRecord], out_dir: Path, title: str) -> Path:
    """Write report.md, report.html and the PNG plots into out_dir; return the HTML path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = group_variants(records)
    header, rows = table_rows(groups)
    other_header, other_rows = table_rows(groups, headline=False)
    cmp_header, cmp_rows = comparison_rows(groups)
    constant = held_constant(groups)
    left_out = [r for r in records if r.status != "finished"]
    by_status = {s: sum(r.status == s for r in left_out) for s in sorted({r.status for r in left_out})}
    note = f"{len(records) - len(left_out)} finished runs in {len(groups)} variants."
    if left_out:
        note += (f" {len(left_out)} runs not finished are left out of the table ("
                 + ", ".join(f"{n} {s}" for s, n in by_status.items()) + ").")
    notes = ["Mean ± std over seeds, rounded to the precision the seed spread allows. eval/* is the canonical "
             "held-out set, the same inputs for every variant. '≈ chance': 0.5 lies within the accuracy's 95% "
             "interval (test-set binomial or, over seeds, t), so it is not a result."]
    if tokenizers_differ(groups):
        notes.append("† The variants use different tokenizers: per-token losses are not comparable. "
                     "Rank them by eval/mlm_loss_per_char (summed loss over masked tokens per character they cover).")
    every_run = [r for runs in groups.values() for r in runs]
    names = all_metric_names(every_run)
    copies = metric_copies(every_run, names)
    metrics = [n for n in names if n not in copies]  # metric_names(), with the copies kept for the note
    if copies:
        notes.append("Shown once, equal in every run: " + ", ".join(f"{c} = {o}" for c, o in copies.items()) + ".")
    plots = [p for p in (
        plot_curves(groups, out_dir / "mlm_loss_vs_tokens.png"),
        plot_points(groups, [m for m in metrics if m.startswith(("eval/", "val/"))], out_dir / "final_metrics.png",
                    "final held-out metrics, mean ± std over seeds"),
        plot_points(groups, [m for m in metrics if m.startswith("probe/")], out_dir / "probe_accuracy.png",
                    "NSP / SOP probe accuracy, mean ± std over seeds"),
        plot_points(groups, [m for m in metrics if m.startswith(("glue/", "sts/"))], out_dir / "downstream.png",
                    "downstream metrics, mean ± std over seeds"),
    ) if p is not None]
    md = [f"# {title}", "", note, "", *itertools.chain.from_iterable((n, "") for n in notes), *_md_table(header, rows), ""]
    if cmp_header[1:]:
        md += ["## Differences between variants (Welch's t-test over seeds)", "", *_md_table(cmp_header, cmp_rows), ""]
    if other_header[2:]:
        md += ["## Other held-out metrics", "", *_md_table(other_header, other_rows), ""]
    md += ["## Settings held constant", "", ", ".join(f"`{c}`" for c in constant) or "(none)", ""]
    md += [f"![{p.stem}]({p.name})" for p in plots]
    (out_dir / "report.md").write_text("\n".join(md) + "\n")

    esc = html.escape
    short, keys = _short_labels(groups)
    labels = dict(sorted(zip(groups, short), key=lambda kv: -len(kv[0])))  # longest first: no partial replace
    parts = [f"<h1>{esc(title)}</h1><p>{esc(note)}</p>",
             *(f"<p class='{'note' if n.startswith('†') else ''}'>{esc(n)}</p>" for n in notes),
             _html_table(header, rows, labels, keys)]
    if cmp_header[1:]:
        parts += ["<h2>Differences between variants (Welch's t-test over seeds)</h2>",
                  _html_table(cmp_header, cmp_rows, labels, keys)]
    parts += [f'<h2>{esc(p.stem.replace("_", " "))}</h2><img alt="{esc(p.stem)}" src="data:image/png;base64,'
              f'{base64.b64encode(p.read_bytes()).decode()}">' for p in plots]
    if other_header[2:]:
        parts += ["<h2>Other held-out metrics</h2>", _html_table(other_header, other_rows, labels, keys)]
    parts += ["<h2>Settings held constant</h2><ul class='constant'>"
              + "".join(f"<li>{esc(c)}</li>" for c in constant) + "</ul>"]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width'><title>{esc(title)}</title><style>{PAGE_STYLE}</style></head>"
            f"<body>{''.join(parts)}</body></html>")
    (out_dir / "report.html").write_text(page)
    return out_dir / "report.html"


def main(argv: Optional[list[str]] = None) -> int:
    from lightning_bert.cli import ReportArgs, describe_schema, parse, required, run_main

    def body(args: list[str]) -> int:
        opts, _ = parse(ReportArgs, args, positional=("source",), section="report")
        source_arg = required(opts.source, "report SOURCE [--out DIR]")
        source = Path(source_arg)
        if source.is_dir():
            records, out = read_local(source), Path(opts.out or source / "report")
        elif re.fullmatch(r"[\w.-]+/[\w.-]+/\w+", source_arg):
            records, out = read_wandb(source_arg), Path(opts.out or Path("reports") / source.name)
        else:
            raise ReportError(f"{source_arg} is neither a directory nor a W&B sweep path ENTITY/PROJECT/SWEEP_ID")
        if not records:
            raise ReportError(f"no run records (summary.json or {STATE_FILE}) found in {source_arg}")
        groups = ", ".join(dict.fromkeys(r.group for r in records if r.group)) or source.resolve().name
        page = write_report(records, out, f"Ablation report: {groups}")
        print(f"report written to {page} ({len(records)} runs)")
        return 0

    return run_main(__doc__ or "", body, argv, lambda: describe_schema(ReportArgs))


if __name__ == "__main__":
    sys.exit(main())
