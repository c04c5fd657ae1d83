"""Held-out cosines of the instruction shift with the bias direction, with two nulls.

Templates (BBQ ``group``) are split into ``k`` folds. For each fold the bias direction is
the difference of means of ``biased_answer:baseline`` on the *other* folds' templates, and
the instruction shift is the mean paired difference (instruction - baseline) of the fold's
*own* items; the reported cosine is the mean over folds of cos(held-out shift, bias
direction fitted elsewhere), so neither vector sees the other's templates. Intervals:
a percentile bootstrap over held-out templates (bias directions fixed). Controls:

- *shuffled-condition directions*: each template's items have instruction and baseline
  swapped at random (a sign flip of its differences), 200 draws; the p-value is two-sided
  (|null| >= |observed|);
- *random directions*: cosines of the observed shift with 100 random unit vectors (the
  isotropic baseline, ~N(0, 1/d); weaker, since activations are anisotropic).

"not distinguishable from the control" when p >= 0.05. Only BBQ rows enter (a Winogender
row has no biased answer; mixing its shift into a BBQ direction blurs both).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from probe.scoring.stats import percentile_interval

N_FLIPS, N_RANDOM, N_BOOT = 200, 100, 1000


def template_folds(templates: list[str], k: int, seed: int) -> dict[str, int]:
    """Template -> fold, templates shuffled with ``seed`` then dealt round-robin."""
    uniq = sorted(set(templates))
    order = np.random.default_rng([seed, 4409]).permutation(len(uniq))
    return {uniq[j]: i % k for i, j in enumerate(order)}


def _cos(S: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of S (B, d) with b; 0 for a zero row or direction."""
    den = np.linalg.norm(S, axis=-1) * np.linalg.norm(b)
    return np.divide(S @ b, den, out=np.zeros(len(S)), where=den > 0)


def heldout_cosines(diffs: np.ndarray, diff_groups: list[str], X_bias: np.ndarray,
                    y_bias: np.ndarray, bias_groups: list[str], *, k: int = 5,
                    seed: int = 0) -> dict[str, Any] | None:
    """Cross-fitted cosine with interval and both nulls; None when < 2 folds can be built.

    ``diffs`` (n, d): per paired item, instruction minus baseline activation; ``X_bias``,
    ``y_bias``: the bias target's rows (1 = biased answer) and their templates.
    """
    folds = template_folds(list(diff_groups) + list(bias_groups), k, seed)
    k = len(set(folds.values()))
    if k < 2:
        return None
    rng = np.random.default_rng([seed, 7703])
    per_fold = []  # (template sums (T, d), template counts (T,), bias direction)
    for f in range(k):
        train = np.array([folds[g] != f for g in bias_groups])
        pos, neg = train & (y_bias == 1), train & (y_bias == 0)
        mine = [i for i, g in enumerate(diff_groups) if folds[g] == f]
        if not pos.any() or not neg.any() or not mine:
            continue  # this fold cannot be scored: no held-out items or a one-class bias fit
        b = X_bias[pos].mean(0) - X_bias[neg].mean(0)
        ts = sorted({diff_groups[i] for i in mine})
        tix = {t: j for j, t in enumerate(ts)}
        sums, counts = np.zeros((len(ts), diffs.shape[1])), np.zeros(len(ts))
        for i in mine:
            sums[tix[diff_groups[i]]] += diffs[i]
            counts[tix[diff_groups[i]]] += 1
        per_fold.append((sums, counts, b))
    if not per_fold:
        return None

    def stat(weights: list[np.ndarray]) -> np.ndarray:
        """Mean over folds of cos(weighted held-out shift, fold's bias direction)."""
        return np.mean([_cos(w @ s / np.maximum(w @ c, 1e-12)[:, None], b)
                        for w, (s, c, b) in zip(weights, per_fold, strict=True)], axis=0)

    ones = [np.ones((1, len(c))) for _, c, _ in per_fold]
    observed = float(stat(ones)[0])
    fold_cos = [float(_cos(w @ s / (w @ c)[:, None], b)[0])
                for w, (s, c, b) in zip(ones, per_fold, strict=True)]
    boot = stat([rng.multinomial(len(c), np.full(len(c), 1 / len(c)), size=N_BOOT)
                 for _, c, _ in per_fold])
    # sign flips per template; the denominator uses |w| so the mean stays a mean
    flips = [rng.choice([-1.0, 1.0], size=(N_FLIPS, len(c))) for _, c, _ in per_fold]
    null = np.mean([_cos((w @ s) / (np.abs(w) @ c)[:, None], b)
                    for w, (s, c, b) in zip(flips, per_fold, strict=True)], axis=0)
    shift = diffs.mean(0)
    rand = rng.normal(size=(N_RANDOM, diffs.shape[1]))
    rand_cos = _cos(rand, shift)
    p = float((1 + np.sum(np.abs(null) >= abs(observed) - 1e-12)) / (1 + N_FLIPS))
    return {
        "cosine": observed, "cosine_ci": list(percentile_interval(boot)),
        "n_pairs": int(len(diffs)), "n_templates": len(set(diff_groups)), "k_folds": k,
        "n_folds_scored": len(per_fold), "fold_cosines": fold_cos,
        "control": {"shuffled_condition_5_95": [float(np.percentile(null, 5)),
                                                float(np.percentile(null, 95))],
                    "n_draws": N_FLIPS, "p_value": p,
                    "random_direction_5_95": [float(np.percentile(rand_cos, 5)),
                                              float(np.percentile(rand_cos, 95))],
                    "n_random": N_RANDOM},
        "verdict": _verdict(observed, list(percentile_interval(boot)), p, len(per_fold),
                            len(set(diff_groups))),
    }


def _verdict(cosine: float, ci: list[float], p: float, n_folds: int, n_templates: int) -> str:
    """Toward or away from the biased answer only when the sign-flip p is under 0.05 and
    the cosine's interval excludes 0, over at least 2 scored folds and 5 templates (fewer
    make the sign-flip null and the template bootstrap degenerate); else not
    distinguishable, or no verdict with the reason."""
    if n_folds < 2 or n_templates < 5:
        return f"no verdict: {n_folds} scored folds, {n_templates} templates (need 2 and 5)"
    if p >= 0.05 or not (ci[0] > 0 or ci[1] < 0):
        return "not distinguishable from the control"
    return "away from the biased answer" if cosine < 0 else "toward the biased answer"
