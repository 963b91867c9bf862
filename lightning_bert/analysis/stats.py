"""Seed statistics for reports: mean ± std rounded to what the spread allows, Welch's t-test between
variants, and whether an accuracy can be told apart from chance."""
from __future__ import annotations

import math
import statistics
from typing import Optional, Sequence

ALPHA = 0.05  # a difference with Welch p >= ALPHA is reported as "within noise"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single seed)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def decimals(spread: float) -> Optional[int]:
    """Decimal places that keep the spread's first significant digit (two when it starts with 1 or 2,
    as the Particle Data Group rounds): 0.0006527 -> 4, 0.1003 -> 2, 0.7 -> 1, 345 -> -2. None for 0."""
    if not spread > 0 or not math.isfinite(spread):
        return None
    exponent = math.floor(math.log10(spread))
    significant = 2 if spread / 10 ** exponent < 3 else 1
    return significant - 1 - exponent


def _round(x: float, places: int) -> str:
    value = round(x, places)
    return f"{value:.{max(places, 0)}f}"


def fmt_number(x: float, places: Optional[int] = None) -> str:
    """x with `places` decimals (may be negative: rounded to tens, hundreds...), else 4 significant digits."""
    if not math.isfinite(x):
        return str(x)
    return _round(x, places) if places is not None else f"{x:.4g}"


def fmt_mean_std(values: Sequence[float]) -> str:
    """'0.0748 ± 0.0007': both rounded to the precision the seed spread allows; one seed says so."""
    mean, std = mean_std(values)
    if len(values) == 1:
        return f"{mean:.4g} (1 seed)"
    places = decimals(std)
    if places is None:  # identical across seeds
        return f"{mean:.4g} ± 0"
    return f"{_round(mean, places)} ± {_round(std, places)}"


def welch_p(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Two-sided p-value of Welch's t-test (unequal variances); None with fewer than 2 values a side or no
    spread on either side."""
    if len(a) < 2 or len(b) < 2 or (statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0):
        return None
    from scipy.stats import ttest_ind  # lazy: scipy is only needed by reports

    return float(ttest_ind(a, b, equal_var=False).pvalue)


def fmt_comparison(a: Sequence[float], b: Sequence[float]) -> str:
    """'Δ -0.12, p=0.003' when the difference exceeds the seed spread, else 'within noise (p=0.41)'."""
    diff = statistics.fmean(b) - statistics.fmean(a)
    p = welch_p(a, b)
    spread = math.sqrt(mean_std(a)[1] ** 2 / len(a) + mean_std(b)[1] ** 2 / len(b))  # std error of diff
    delta = f"Δ {'+' if diff >= 0 else ''}{fmt_number(diff, decimals(spread))}"
    if p is None:
        return f"{delta}, no test (needs >= 2 seeds each with spread)"
    shown = f"p={p:.2g}" if p >= 0.001 else "p<0.001"
    return f"{delta}, {shown}" if p < ALPHA else f"within noise ({shown})"


def t_interval_half_width(values: Sequence[float], level: float = 0.95) -> float:
    """Half-width of the t confidence interval of the mean over seeds (0 for one value)."""
    if len(values) < 2:
        return 0.0
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, len(values) - 1) * mean_std(values)[1] / math.sqrt(len(values)))


def at_chance(accuracies: Sequence[float], ci95: Sequence[float], chance: float = 0.5) -> bool:
    """True when chance lies within the 95% interval of a variant's accuracy: the per-run test-set interval
    (binomial) or, over seeds, the t interval of the mean, whichever is wider."""
    mean = statistics.fmean(accuracies)
    width = max(statistics.fmean(ci95) if ci95 else 0.0, t_interval_half_width(accuracies))
    return abs(mean - chance) <= width
