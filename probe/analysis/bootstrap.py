"""AUROC and template-cluster bootstrap confidence intervals for probe predictions."""

from __future__ import annotations

import numpy as np


def auroc(y: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); nan with a single class."""
    return float(_weighted_auroc(y, scores, np.ones((1, len(y))))[0])


def _weighted_auroc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUROC for each row of weights w (B, n): P(score_pos > score_neg), ties half."""
    pos, neg = y == 1, y == 0
    wins = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
    num = ((w[:, pos] @ wins) * w[:, neg]).sum(1)
    den = w[:, pos].sum(1) * w[:, neg].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def cluster_bootstrap(y: np.ndarray, scores: np.ndarray, groups: np.ndarray, *,
                      n_boot: int = 1000, seed: int = 0) -> dict[str, tuple[float, float]]:
    """95% percentile CIs of accuracy and AUROC, resampling templates with replacement."""
    _, gi = np.unique(groups, return_inverse=True)
    n_groups = gi.max() + 1
    draws = np.random.default_rng(seed).integers(0, n_groups, size=(n_boot, n_groups))
    flat = (draws + np.arange(n_boot)[:, None] * n_groups).ravel()
    counts = np.bincount(flat, minlength=n_boot * n_groups).reshape(n_boot, n_groups)
    w = counts[:, gi].astype(float)  # each row's weight = times its template was drawn
    acc = (w @ ((scores > 0) == (y == 1))) / w.sum(1)
    auc = _weighted_auroc(y, scores, w)

    def ci(v: np.ndarray) -> tuple[float, float]:
        v = v[np.isfinite(v)]
        return (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) if len(v) else (
            float("nan"), float("nan"))
    return {"accuracy": ci(acc), "auroc": ci(auc)}
