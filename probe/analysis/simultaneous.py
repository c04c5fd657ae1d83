"""Simultaneous (sup-t) bootstrap bands: intervals that stay valid for a cell picked after
looking at all of them.

The report names the attention/MLP output of largest effect. Its ordinary (marginal) 95%
interval is too narrow for that choice: among 60 noise cells the largest one's interval
excludes 0 most of the time. A sup-t band (Montiel Olea & Plagborg-Møller 2019) covers every
cell at once with 95% probability, so it covers whichever cell was picked: each resample
(templates drawn with replacement, the same draw for every cell) gives the largest
standardised deviation over cells, ``max_c |v*_c - v_c| / sd_c``; with ``q`` its 95th
percentile the band is ``v_c ± q · sd_c``. With a single cell it is about the marginal
interval.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from probe.scoring.stats import LEVEL, cluster_sums, resampled_sums

METHOD = ("sup-t simultaneous band (Montiel Olea & Plagborg-Møller 2019): template-cluster "
          "bootstrap, one draw shared by every cell, 95% coverage of all cells at once")


def sup_t_band(num: np.ndarray, den: np.ndarray, valid: np.ndarray,
               clusters: Sequence[Hashable], n_boot: int = 1000, seed: int = 0,
               level: float = LEVEL) -> dict[str, Any]:
    """Band for cells whose value is a ratio of item sums, sum(num) / sum(den), over the
    items each cell touched (``valid``); arrays are (cells, items).

    A mean is ``den`` = 1; a normalised patching effect is ``num`` = delta, ``den`` = gap.
    Returns the values, the band (cells, 2), ``q`` and the number of clusters; cells
    undefined on the data, or with no spread over resamples, get a band of NaN.
    """
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    mask = np.asarray(valid, dtype=bool)
    n_cells = num.shape[0]
    cols = np.concatenate([np.where(mask, num, 0.0), np.where(mask, den, 0.0)]).T
    units = cluster_sums(cols, list(clusters))  # (clusters, 2 * cells)
    with np.errstate(divide="ignore", invalid="ignore"):
        total = units.sum(0)
        value = total[:n_cells] / total[n_cells:]
        sums = resampled_sums(units, n_boot, seed)
        boot = sums[:, :n_cells] / sums[:, n_cells:]
    boot[~np.isfinite(boot)] = np.nan
    seen = np.isfinite(boot).sum(0) > 1
    sd = np.zeros(n_cells)
    sd[seen] = np.nanstd(boot[:, seen], axis=0)
    usable = np.isfinite(value) & (sd > 0)
    band = np.full((n_cells, 2), np.nan)
    q = float("nan")
    if usable.any():
        dev = np.abs(boot[:, usable] - value[usable]) / sd[usable]
        worst = np.nanmax(np.where(np.isfinite(dev), dev, -np.inf), axis=1)
        q = float(np.percentile(worst[np.isfinite(worst)], 100 * level))
        band[usable] = np.stack([value[usable] - q * sd[usable],
                                 value[usable] + q * sd[usable]], axis=1)
    return {"value": value.tolist(), "band": band.tolist(), "q": q,
            "n_clusters": int(units.shape[0]), "n_boot": n_boot, "method": METHOD}
