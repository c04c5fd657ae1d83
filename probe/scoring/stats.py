"""Generic statistics: a vectorised percentile bootstrap and Pearson r with a Fisher-z interval.

The bootstrap resamples *items*. Every metric here is a ratio of column sums (accuracy =
correct / parsed, ...), so a resample is summarised by its weighted column sums: each
resample is a vector of item counts, and all resamples of a chunk are one matrix product.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist

import numpy as np

SumStat = Callable[[np.ndarray], np.ndarray]
_CHUNK_CELLS = 2_000_000  # items x resamples per chunk: bounds memory (~16 MB of counts)


def resampled_sums(columns: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Column sums of ``n_boot`` bootstrap resamples of the rows: shape (n_boot, k)."""
    n, k = columns.shape
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, k))
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        draws = rng.integers(0, n, size=(size, n))
        # counts[b, i] = how often item i was drawn in resample b
        flat = (draws + np.arange(size)[:, None] * n).ravel()
        counts = np.bincount(flat, minlength=size * n).reshape(size, n)
        out[start:start + size] = counts @ columns
    return out


def bootstrap_ci(columns: np.ndarray, stat: SumStat, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``stat`` (a function of column sums, vectorised over rows of
    its (B, k) argument) over item resamples; (nan, nan) when there are no items or no
    resample gives a finite value."""
    columns = np.asarray(columns, dtype=float)
    if columns.ndim != 2 or columns.shape[0] == 0 or n_boot <= 0:
        return (math.nan, math.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.asarray(stat(resampled_sums(columns, n_boot, seed)), dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (math.nan, math.nan)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return (float(low), float(high))


def ratio(num: float, den: float) -> float:
    """num / den, NaN for an empty denominator."""
    return num / den if den else math.nan


def pearson(x: list[float], y: list[float]) -> float:
    """Pearson r; NaN for fewer than 2 points or a constant series."""
    if len(x) < 2 or len(x) != len(y):
        return math.nan
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    xd, yd = xa - xa.mean(), ya - ya.mean()
    den = math.sqrt(float((xd**2).sum() * (yd**2).sum()))
    return float((xd * yd).sum()) / den if den else math.nan


def fisher_ci(r: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Fisher-z interval for a Pearson r from ``n`` pairs; NaN when n < 4 or r undefined."""
    if n < 4 or not math.isfinite(r):
        return (math.nan, math.nan)
    if abs(r) >= 1:
        return (r, r)
    z_crit = NormalDist().inv_cdf(0.5 + level / 2)
    z, se = math.atanh(r), 1 / math.sqrt(n - 3)
    return (math.tanh(z - z_crit * se), math.tanh(z + z_crit * se))
