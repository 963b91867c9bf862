"""The loss curve against tokens seen: a finished training run draws its own (curves.png), the report
one line per variant. Nothing here imports the report, so a training run can draw it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from lightning_bert.analysis.runs import CURVE_METRIC, FALLBACK_CURVE, RecordedRun


def pyplot() -> Any:
    """matplotlib.pyplot writing files only (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curve_metric(groups: dict[str, list[RecordedRun]]) -> str:
    """The canonical eval/mlm_loss where runs log it, else their own val/mlm_loss."""
    rows = (row for runs in groups.values() for r in runs for row in r.history)
    return CURVE_METRIC if any(CURVE_METRIC in row for row in rows) else FALLBACK_CURVE


def plot_curves(groups: dict[str, list[RecordedRun]], path: Path, metric: Optional[str] = None) -> Optional[Path]:
    """Held-out MLM loss against tokens seen: mean line and ± std band over seeds, per variant."""
    import numpy as np

    metric = metric or curve_metric(groups)
    plt = pyplot()
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
