"""Tables from run records: runs grouped into variants (mean ± std over seeds), the metric columns in
order, pairwise Welch comparisons, the settings held constant."""
from __future__ import annotations

import itertools
import json
import math
import statistics
from typing import Any, Iterable

from lightning_bert.analysis.runs import RecordedRun, metric_values
from lightning_bert.analysis.stats import at_chance, fmt_comparison, fmt_mean_std

NOT_A_VARIANT = ("run.seed", "run.name", "run.output_dir", "run.resume", "logger.", "data.cache_dir")
METRIC_ORDER = ("eval/", "val/", "probe/", "glue/", "sts/")
CANONICAL = ("eval/mlm_loss", "eval/mlm_loss_per_char", "eval/mlm_acc")  # the same inputs for every variant
PER_TOKEN = ("eval/mlm_loss", "eval/mlm_acc", "val/mlm_loss", "val/mlm_acc", "val/loss", "val/perplexity")
PROBE_DETAILS = ("_ci95", "_n", "_fit_n")  # shown beside a probe accuracy, not as columns
TOKENIZER_KEYS = ("tokenizer.kind", "tokenizer.vocab_size", "tokenizer.lowercase", "tokenizer.path")


def _value(record: RecordedRun, key: str) -> Any:
    if key in record.params:
        return record.params[key]
    return record.config.get(key, record.config.get(f"run.{key}"))  # sweep key `experiment` = run.experiment


def _same(values: Iterable[Any]) -> bool:
    return len({json.dumps(v, sort_keys=True, default=str) for v in values}) <= 1


def variant_keys(records: list[RecordedRun]) -> list[str]:
    """The varied settings other than the seed: sweep parameters if known, else config differences."""
    keys = list(dict.fromkeys(k for r in records for k in r.params))
    if not keys:
        keys = sorted({k for r in records for k in r.config})
    return [k for k in keys if not k.startswith(NOT_A_VARIANT) and not _same(_value(r, k) for r in records)]


def group_variants(records: list[RecordedRun]) -> dict[str, list[RecordedRun]]:
    """Finished runs by variant label, in order of first appearance (the sweep's order)."""
    done = [r for r in records if r.status == "finished"]
    keys = variant_keys(done)
    groups: dict[str, list[RecordedRun]] = {}
    for record in done:
        label = ", ".join(f"{k}={_value(record, k)}" for k in keys) or "all runs"
        groups.setdefault(label, []).append(record)
    return groups


def held_constant(groups: dict[str, list[RecordedRun]]) -> list[str]:
    """`key=value` of every config setting that all compared runs share (the seed and paths excepted)."""
    runs = [r for rs in groups.values() for r in rs]
    keys = sorted({k for r in runs for k in r.config} | {k for r in runs for k in r.params})
    return [f"{k}={_value(runs[0], k)}" for k in keys
            if not k.startswith(NOT_A_VARIANT) and _same(_value(r, k) for r in runs)] if runs else []


def tokenizers_differ(groups: dict[str, list[RecordedRun]]) -> bool:
    """Per-token losses of runs with different vocabularies are not comparable."""
    runs = [r for rs in groups.values() for r in rs]
    return any(not _same(r.config.get(k) for r in runs) for k in TOKENIZER_KEYS)


def all_metric_names(records: Iterable[RecordedRun]) -> list[str]:
    """Held-out metrics only (eval/, val/, probe/, glue/, sts/), the canonical eval/mlm_loss first; a
    probe's interval and counts go beside its accuracy, not in columns of their own."""
    names = {k for r in records for k, v in r.metrics.items()
             if isinstance(v, (int, float)) and k.startswith(METRIC_ORDER) and not k.endswith(PROBE_DETAILS)}
    rank = {n: (CANONICAL.index(n) if n in CANONICAL else len(CANONICAL),
                next(i for i, p in enumerate(METRIC_ORDER) if n.startswith(p)), n) for n in names}
    return sorted(names, key=rank.__getitem__)


def metric_names(records: Iterable[RecordedRun]) -> list[str]:
    """all_metric_names without the copies (metric_copies): each number once."""
    records = list(records)
    ordered = all_metric_names(records)
    copies = metric_copies(records, ordered)
    return [n for n in ordered if n not in copies]


def metric_copies(records: Iterable[RecordedRun], names: list[str]) -> dict[str, str]:
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


def _probe_task(metric: str) -> str:
    return metric.split("/", 1)[1].split("_", 1)[0]  # probe/sop_head_acc -> sop


def column_header(groups: dict[str, list[RecordedRun]], metric: str) -> str:
    """Probe columns carry their test count and the widest per-run 95% interval."""
    if not metric.startswith("probe/"):
        return metric
    runs = [r for rs in groups.values() for r in rs]
    counts = {int(r.metrics[f"probe/{_probe_task(metric)}_n"]) for r in runs if f"probe/{_probe_task(metric)}_n" in r.metrics}
    ci = metric_values(runs, metric + "_ci95")
    if not ci:
        return metric
    n = f"n={min(counts)}" if len(counts) == 1 else f"n={min(counts)}-{max(counts)}" if counts else ""
    return f"{metric} ({n}, 95% CI ≤ ±{max(ci):.2g})"


def cell(runs: list[RecordedRun], metric: str, per_token_marked: bool) -> str:
    values = metric_values(runs, metric)
    if not values:
        return "–"
    text = fmt_mean_std(values)
    if metric.startswith("probe/") and metric.endswith("_acc"):
        ci = metric_values(runs, metric + "_ci95")
        if not ci:
            return text + " (no interval)"
        if at_chance(values, ci):
            text += " ≈ chance"
    if per_token_marked and metric in PER_TOKEN:
        text += " †"
    return text


def _mean(runs: list[RecordedRun], attr: str) -> list[float]:
    return [float(getattr(r, attr)) for r in runs if getattr(r, attr) is not None]


def _fmt_count(values: list[float]) -> str:
    """Mean count: 2.05M, 30,720; with its range when the seeds differ."""
    if not values:
        return "–"

    def fmt(x: float) -> str:
        return f"{x / 1e6:.3g}M" if x >= 1e6 else f"{x:,.0f}"

    mean = statistics.fmean(values)
    return fmt(mean) if _same(values) else f"{fmt(mean)} ({fmt(min(values))}-{fmt(max(values))})"


def table_rows(groups: dict[str, list[RecordedRun]], headline: bool = True) -> tuple[list[str], list[list[str]]]:
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


def comparison_rows(groups: dict[str, list[RecordedRun]]) -> tuple[list[str], list[list[str]]]:
    """Every pair of variants, every headline metric: Welch's t-test p-value of the difference over seeds,
    or "within noise". Per-token losses are left out when the tokenizers differ."""
    marked = tokenizers_differ(groups)
    metrics = [m for m in metric_names(r for runs in groups.values() for r in runs)
               if is_headline(m) and not (marked and m in PER_TOKEN)]
    rows = []
    for a, b in itertools.combinations(groups, 2):
        row = [f"{b} vs {a}"]
        for metric in metrics:
            va, vb = metric_values(groups[a], metric), metric_values(groups[b], metric)
            row.append(fmt_comparison(va, vb) if va and vb else "–")
        rows.append(row)
    return ["comparison (B vs A: Δ = B - A)", *metrics], rows


def short_labels(groups: dict[str, list[RecordedRun]]) -> tuple[list[str], str]:
    """Variant labels without their keys (for plot axes) and the keys (for the title)."""
    labels = list(groups)
    parts = [[item.split("=", 1) for item in label.split(", ")] for label in labels]
    if all(len(p) == len(parts[0]) and all(len(kv) == 2 for kv in p) for p in parts):
        return [", ".join(kv[1] for kv in p) for p in parts], ", ".join(kv[0] for kv in parts[0])
    return labels, ""
