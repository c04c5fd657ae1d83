"""The sup-t simultaneous band: valid for the largest of many cells picked after looking,
where the marginal interval of that cell is not; it finds a planted cell; one cell gives
about the marginal interval."""

from __future__ import annotations

import numpy as np

from probe.analysis.simultaneous import sup_t_band
from probe.scoring.stats import bootstrap_ci


def _largest(values: np.ndarray, seed: int) -> tuple[bool, bool]:
    """(marginal interval of the largest |mean| excludes 0, its sup-t band does)."""
    n_cells, n = values.shape
    ones, valid = np.ones_like(values), np.ones(values.shape, dtype=bool)
    out = sup_t_band(values, ones, valid, list(range(n)), n_boot=400, seed=seed)
    means = values.mean(1)
    top = int(np.argmax(np.abs(means)))
    cols = np.stack([values[top], ones[top]], axis=1)
    lo, hi = bootstrap_ci(cols, lambda s: s[:, 0] / s[:, 1], 400, seed)
    band = out["band"][top]
    return (not lo <= 0 <= hi), (not band[0] <= 0 <= band[1])


def test_the_largest_noise_cell_is_flagged_by_its_marginal_interval_not_by_the_band() -> None:
    marginal, simultaneous = 0, 0
    for seed in range(20):
        noise = np.random.default_rng(seed).normal(size=(60, 40))
        m, s = _largest(noise, seed)
        marginal, simultaneous = marginal + m, simultaneous + s
    assert marginal >= 14  # selection: about 1 - 0.95^60 of the time
    assert simultaneous <= 3  # 5% family-wise, with room for 20 draws


def test_a_planted_cell_is_found_and_one_cell_is_the_marginal_interval() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=(60, 40))
    values[17] += 1.5
    _, found = _largest(values, 1)
    assert found
    one = values[17:18]
    out = sup_t_band(one, np.ones_like(one), np.ones(one.shape, bool), list(range(40)),
                     n_boot=2000, seed=0)
    assert 1.7 < out["q"] < 2.3
    lo, hi = out["band"][0]
    assert lo < one.mean() < hi and abs((lo + hi) / 2 - one.mean()) < 1e-12


def test_band_resamples_clusters_and_skips_undefined_cells() -> None:
    """Copies of each item inside its own cluster give the original band; a cell with no
    valid item has none."""
    rng = np.random.default_rng(2)
    values = rng.normal(size=(5, 12))
    base = sup_t_band(values, np.ones_like(values), np.ones(values.shape, bool),
                      list(range(12)), n_boot=300, seed=4)
    copies = np.repeat(values, 3, axis=1)
    again = sup_t_band(copies, np.ones_like(copies), np.ones(copies.shape, bool),
                       np.repeat(np.arange(12), 3).tolist(), n_boot=300, seed=4)
    np.testing.assert_allclose(again["band"], base["band"], atol=1e-12)
    valid = np.ones(values.shape, bool)
    valid[2] = False
    out = sup_t_band(values, np.ones_like(values), valid, list(range(12)), n_boot=300)
    assert all(np.isnan(out["band"][2])) and not np.isnan(out["band"][0]).any()
