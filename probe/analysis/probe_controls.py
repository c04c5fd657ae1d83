"""Probe controls: control tasks (adapted from Hewitt & Liang 2019), a permutation null with
p-values per layer, and the best layer chosen on held-out folds.

- **Control task.** Hewitt & Liang give every word *type* a random label, so a probe that
  merely memorises types scores well on it. Here the unit that carries structure is the
  template cluster (the item's ``group``): every row of a cluster gets the same random label,
  1 with the real rows' positive fraction, independently per cluster. (A fixed number of
  positive clusters would make held-out labels anti-correlated with the training majority
  under grouped splits, and the control would sit well below chance.) Adapted: splits are
  grouped by template, so a control label is never seen in training for a test row; the
  control measures what cluster structure alone buys on held-out templates, and its spread
  reflects the number of clusters, not of rows (a row-level shuffle understates it).
- **Permutation null.** ``n_draws`` (>= 100) control tasks, fitted with the same folds and
  the same C as the real probe; p = (1 + #{null >= observed}) / (1 + n_draws). The same
  draws are used at every layer, so ``p_fwer`` (max over layers, Westfall-Young) corrects
  for choosing among layers.
- **Best layer, nested.** For each outer fold the layer is chosen on the outer training
  templates (inner-CV accuracy) and scored on the outer test templates; the pooled
  out-of-fold accuracy of those choices is the reported best-layer accuracy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from probe.analysis.bootstrap import auroc, cluster_bootstrap
from probe.errors import ConfigError

DEFAULT_DRAWS = 100
CONTROL = ("control task (adapted from Hewitt & Liang 2019): random labels per template "
           "cluster (independent, real positive rate); same probe, folds and C")


def check_draws(n_draws: int) -> None:
    """Refuse a null without draws. Fewer draws are allowed but coarse: p cannot go below
    1 / (1 + n_draws), so under 19 draws nothing reaches p < 0.05."""
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 1:
        raise ConfigError(f"--n-draws {n_draws!r}: need a whole number of control draws >= 1 "
                          f"(default {DEFAULT_DRAWS})")


def control_labels(y: np.ndarray, groups: np.ndarray, n_draws: int, seed: int) -> np.ndarray:
    """(n_draws, n) random labels, constant within each template cluster; see module doc."""
    _, gi = np.unique(np.asarray(groups), return_inverse=True)
    n_clusters = int(gi.max()) + 1
    p = float(np.mean(y))
    rng = np.random.default_rng([seed, 7919])  # its own stream: not the splits' or bootstrap's
    out = np.zeros((n_draws, len(gi)), dtype=int)
    for b in range(n_draws):
        lab = rng.random(n_clusters) < p
        while n_clusters > 1 and lab.all() == lab.any():  # one class cannot be fitted: redraw
            lab = rng.random(n_clusters) < p
        out[b] = lab[gi]
    return out


def p_value(observed: float, null: np.ndarray) -> float:
    """One-sided permutation p-value, counting the observed statistic as one draw."""
    null = np.asarray(null, dtype=float)
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null)))


def fwer_p_values(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Max-statistic p-values per layer: observed (L,), null (L, B) with shared draws."""
    null_max = np.asarray(null, dtype=float).max(axis=0)
    return np.array([(1 + np.sum(null_max >= o - 1e-12)) / (1 + len(null_max))
                     for o in np.asarray(observed, dtype=float)])


def null_summary(null_acc: np.ndarray, null_auc: np.ndarray) -> dict[str, Any]:
    """Mean and 5-95% range of the control accuracy over the draws, JSON-ready."""
    return {"n_draws": int(len(null_acc)), "accuracy_mean": float(np.mean(null_acc)),
            "accuracy_5_95": [float(np.percentile(null_acc, 5)),
                              float(np.percentile(null_acc, 95))],
            "auroc_mean": float(np.nanmean(null_auc)) if np.isfinite(null_auc).any() else None}


def nested_best(layers: list[int | None], inner: np.ndarray, scores: np.ndarray,
                null_scores: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
                y: np.ndarray, groups: np.ndarray, controls: np.ndarray, *,
                n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Best layer chosen per outer fold on its training templates, scored on its test ones.

    ``inner`` (L, folds): inner-CV accuracy on each outer training fold; ``scores`` (L, n):
    out-of-fold decision scores; ``null_scores`` (L, B, n): the control draws' scores, each
    fitted to the control labels ``controls`` (B, n) and scored against them, as each
    layer's control is. The null pools the control draws with the same per-fold layer
    choices.
    """
    pooled = np.zeros(scores.shape[1])
    null_pooled = np.zeros(null_scores.shape[1:])
    chosen = []
    for f, (_, te) in enumerate(splits):
        li = int(np.argmax(inner[:, f]))  # ties: the earliest layer
        chosen.append(layers[li])
        pooled[te] = scores[li, te]
        null_pooled[:, te] = null_scores[li][:, te]
    acc = float(np.mean((pooled > 0) == (y == 1)))
    null_acc = np.mean((null_pooled > 0) == (controls == 1), axis=1)
    cis = cluster_bootstrap(y, pooled, groups, n_boot=n_boot, seed=seed)
    return {"method": "nested: layer chosen on each outer fold's training templates "
                      "(inner-CV accuracy), scored on its held-out templates",
            "layer": max(set(chosen), key=chosen.count) if chosen else None,
            "layers_chosen": chosen, "n": int(len(y)),
            "n_templates": len(np.unique(groups)), "accuracy": acc,
            "accuracy_ci": list(cis["accuracy"]), "auroc": auroc(y, pooled),
            "control_accuracy": float(np.mean(null_acc)), "selectivity": acc - float(
                np.mean(null_acc)), "p_value": p_value(acc, null_acc),
            "control": null_summary(null_acc, np.full(len(null_acc), np.nan))}
