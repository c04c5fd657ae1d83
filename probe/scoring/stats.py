"""Generic statistics: a vectorised, template-clustered percentile bootstrap, and Pearson r.

Benchmark rows are not independent: BBQ rows generated from one template share its wording,
and Winogender sentences share their occupation. The bootstrap therefore resamples
*clusters* (templates, occupations), never rows (the cluster bootstrap of Field & Welsh 2007;
Cameron, Gelbach & Miller 2008). Every metric here is a function of column sums
(accuracy = correct / parsed, ...), so each cluster is summarised once by its column sums;
a resample is a vector of cluster counts, and all resamples of a chunk are one matrix
product. With one row per cluster this is exactly the row bootstrap.

A gain (condition minus baseline) is bootstrapped *paired*: each resample draws clusters
once and both conditions' metric is computed on the same draw, so what the two conditions
share (the item's difficulty) cancels in the difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from statistics import NormalDist

import numpy as np

SumStat = Callable[[np.ndarray], np.ndarray]
_CHUNK_CELLS = 2_000_000  # units x resamples per chunk: bounds memory (~16 MB of counts)
LEVEL = 0.95


def cluster_sums(columns: np.ndarray, keys: Sequence[Hashable]) -> np.ndarray:
    """Column sums per cluster, clusters in order of first appearance: shape (C, k)."""
    columns = np.asarray(columns, dtype=float)
    if columns.ndim != 2 or columns.shape[0] != len(keys):
        raise ValueError(f"{columns.shape[0]} rows but {len(keys)} cluster keys")
    index: dict[Hashable, int] = {}
    rows = np.array([index.setdefault(key, len(index)) for key in keys], dtype=np.int64)
    out = np.zeros((len(index), columns.shape[1]))
    np.add.at(out, rows, columns)
    return out


def resampled_sums(units: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Column sums of ``n_boot`` bootstrap resamples of the rows of ``units`` (one row per
    cluster): shape (n_boot, k)."""
    n, k = units.shape
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, k))
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        draws = rng.integers(0, n, size=(size, n))
        # counts[b, i] = how often unit i was drawn in resample b
        flat = (draws + np.arange(size)[:, None] * n).ravel()
        counts = np.bincount(flat, minlength=size * n).reshape(size, n)
        out[start:start + size] = counts @ units
    return out


def zero_width(low: float, high: float) -> bool:
    """Whether an interval has no width beyond float rounding: every resample gave the same
    value (one cluster, identical clusters), so it can carry no verdict."""
    return high - low <= 1e-9 * max(1.0, abs(low), abs(high))


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of the finite ``values``; (nan, nan) when none is finite."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (math.nan, math.nan)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return (float(low), float(high))


def bootstrap_values(units: np.ndarray, stat: SumStat, n_boot: int, seed: int) -> np.ndarray:
    """``stat`` on each of ``n_boot`` resamples of the units (NaN where undefined)."""
    units = np.asarray(units, dtype=float)
    if units.ndim != 2 or units.shape[0] == 0 or n_boot <= 0:
        return np.empty(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(stat(resampled_sums(units, n_boot, seed)), dtype=float)


def bootstrap_ci(columns: np.ndarray, stat: SumStat, n_boot: int = 1000, seed: int = 0,
                 level: float = LEVEL,
                 clusters: Sequence[Hashable] | None = None) -> tuple[float, float]:
    """Percentile interval of ``stat`` (a function of column sums, vectorised over rows of
    its (B, k) argument) over resamples of ``clusters`` (one key per row of ``columns``;
    None: every row its own cluster). (nan, nan) when there are no rows or no resample
    gives a finite value."""
    columns = np.asarray(columns, dtype=float)
    if columns.ndim != 2 or columns.shape[0] == 0:
        return (math.nan, math.nan)
    units = columns if clusters is None else cluster_sums(columns, clusters)
    return percentile_interval(bootstrap_values(units, stat, n_boot, seed), level)


def paired_difference(units_a: np.ndarray, units_b: np.ndarray, stat: SumStat,
                      n_boot: int = 1000, seed: int = 0,
                      level: float = LEVEL) -> tuple[float, tuple[float, float]]:
    """(stat(A) - stat(B), its paired percentile interval) for cluster matrices aligned row
    by row (row i of both is cluster i; a cluster absent from one condition is a zero row).
    Each resample draws clusters once and evaluates both conditions on that draw."""
    a, b = np.asarray(units_a, dtype=float), np.asarray(units_b, dtype=float)
    k = a.shape[1]

    def diff(sums: np.ndarray) -> np.ndarray:
        return stat(sums[:, :k]) - stat(sums[:, k:])

    joint = np.concatenate([a, b], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(diff(joint.sum(axis=0)[None, :])[0])
    return value, percentile_interval(bootstrap_values(joint, diff, n_boot, seed), level)


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


def pearson_from_sums(n: np.ndarray, sx: np.ndarray, sy: np.ndarray, sxx: np.ndarray,
                      syy: np.ndarray, sxy: np.ndarray) -> np.ndarray:
    """Pearson r from the sums n, Σx, Σy, Σx², Σy², Σxy (vectorised; NaN when undefined),
    so that r, too, is a function of column sums and bootstraps like the other metrics."""
    cov = n * sxy - sx * sy
    var = (n * sxx - sx**2) * (n * syy - sy**2)
    # Sums of squares of a constant series can come out a rounding error above 0.
    scale = (n * sxx + sx**2) * (n * syy + sy**2)
    ok = (n >= 2) & (var > 1e-12 * scale)
    r = np.clip(cov / np.sqrt(np.where(ok, var, 1.0)), -1.0, 1.0)
    return np.where(ok, r, np.nan)


def fisher_ci(r: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Fisher-z interval for a Pearson r from ``n`` pairs; NaN when n < 4 or r undefined."""
    if n < 4 or not math.isfinite(r):
        return (math.nan, math.nan)
    if abs(r) >= 1:
        return (r, r)
    z_crit = NormalDist().inv_cdf(0.5 + level / 2)
    z, se = math.atanh(r), 1 / math.sqrt(n - 3)
    return (math.tanh(z - z_crit * se), math.tanh(z + z_crit * se))
