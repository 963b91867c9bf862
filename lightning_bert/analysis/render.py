"""The report page: report.md and report.html (tables, notes, the plots inlined) and the point plots."""
from __future__ import annotations

import base64
import html
import itertools
import statistics
from pathlib import Path
from typing import Optional

from lightning_bert.analysis.curves import plot_curves, pyplot
from lightning_bert.analysis.runs import RecordedRun, metric_values
from lightning_bert.analysis.stats import mean_std
from lightning_bert.analysis.tables import (all_metric_names, comparison_rows, group_variants, held_constant,
                                            metric_copies, short_labels, table_rows, tokenizers_differ)


def plot_points(groups: dict[str, list[RecordedRun]], metrics: list[str], path: Path, title: str) -> Optional[Path]:
    """One panel per metric: each variant's seeds (small dots) and mean ± std (point and error bar) on an
    axis fitted to the data, never stretched to 0. Probe panels mark chance (0.5). At most 12 inches wide
    at 100 dpi, so the page fits a 1280-pixel window."""
    if not metrics:
        return None
    plt = pyplot()
    labels, keys = short_labels(groups)
    cols = min(len(metrics), 3)
    rows = -(-len(metrics) // cols)
    height = 0.9 + 0.32 * len(labels)
    fig, axes = plt.subplots(rows, cols, figsize=(12, height * rows + 0.6), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for i, label in enumerate(groups):
            values = metric_values(groups[label], metric)
            if not values:
                continue
            mean, std = mean_std(values)
            ci = metric_values(groups[label], metric + "_ci95")
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


def write_report(records: list[RecordedRun], out_dir: Path, title: str) -> Path:
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
    short, keys = short_labels(groups)
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
