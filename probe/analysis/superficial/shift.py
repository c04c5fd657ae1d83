"""Prompt-induced shift alignment: does a condition move hidden states along the concept?

Adapted from Lee et al. 2025 (arXiv 2505.11924), who call the change in hidden states a
self-correction prompt causes the *prompt-induced shift* and measure its alignment with
directions built from contrastive pairs. Here, per hook and condition C: the shift of an
item is ``x_C - x_baseline`` at the analysed position (items with both rows); the shift of a
template half is the mean over its items; the alignment is the cosine of that mean shift
with the half's held-out concept direction (fitted on the other half's templates), averaged
over the two halves. Negative: C moves the states away from the stereotyped answer.

Interval: a percentile bootstrap that resamples templates within each half (the
directions fixed). Two nulls:

- *random directions*: the cosine of the same shifts with ``N_RANDOM`` random directions
  drawn with the covariance of the baseline's own states at this hook (random combinations
  of its centred rows, so they lie where the activations vary: hidden states are far from
  isotropic, and isotropic directions, ~N(0, 1/d), would make any shift inside the
  activations' main subspace look aligned); two-sided p-value. The isotropic band is
  recorded too, for scale;
- *placebo shift*: the same cosine for a placebo instruction's shift on the same items
  (``placebo-k`` for ``instruct-k``/``negate-k``, or ``controls``), and the paired
  difference C minus placebo on the same template draws. An instruction of that length and
  frame that says nothing about bias moves the states too; only what exceeds it is the
  instruction's content.

Verdict: aligned (toward / away from the stereotyped answer) when the random-direction
p < 0.05 and, where a placebo was run, the difference from it has an interval that excludes
0 in the cosine's direction; otherwise "not distinguishable from the control" (naming it);
"undetermined" where the direction failed the split-half check
(:mod:`probe.analysis.superficial.reliability`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from probe.analysis.self_correction import placebo_of
from probe.analysis.superficial.project import BASELINE, Rows
from probe.scoring.gains import MIN_N
from probe.scoring.stats import percentile_interval

N_RANDOM = 200
ALPHA = 0.05


def paired(sel: Rows, condition: str) -> tuple[np.ndarray, np.ndarray]:
    """Positions (condition, baseline) of the items with rows under both."""
    base = {sel.item[i]: i for i in sel.of(BASELINE)}
    mine = [(i, base[sel.item[i]]) for i in sel.of(condition) if sel.item[i] in base]
    return (np.array([a for a, _ in mine], dtype=int), np.array([b for _, b in mine], dtype=int))


def _cos(S: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Cosine of each row of S (..., d) with u; 0 for a zero row or direction."""
    den = np.linalg.norm(S, axis=-1) * np.linalg.norm(u)
    return np.divide(S @ u, den, out=np.zeros(S.shape[:-1]), where=den > 0)


class HalfShifts:
    """Per half, per-template sums of one condition's paired shifts (templates fixed per half
    across conditions, so resampling weights pair the conditions)."""

    def __init__(self, X: np.ndarray, sel: Rows, templates: list[list[str]]):
        self.X, self.sel, self.templates = X, sel, templates

    def sums(self, condition: str) -> list[tuple[np.ndarray, np.ndarray]]:
        pc, pb = paired(self.sel, condition)
        ok = np.isfinite(self.X[pc]).all(1) & np.isfinite(self.X[pb]).all(1) if len(pc) else []
        pc, pb = pc[ok], pb[ok]
        out = []
        for f, temps in enumerate(self.templates):
            where = {t: j for j, t in enumerate(temps)}
            S, c = np.zeros((len(temps), self.X.shape[1])), np.zeros(len(temps))
            for i, j in zip(pc, pb, strict=True):
                if self.sel.fold[i] == f:
                    S[where[self.sel.cluster[i]]] += self.X[i] - self.X[j]
                    c[where[self.sel.cluster[i]]] += 1
            out.append((S, c))
        return out


def _stat(weights: list[np.ndarray], sums: list[tuple[np.ndarray, np.ndarray]],
          dirs: list[np.ndarray]) -> np.ndarray:
    """Mean over halves with items of cos(weighted mean shift, the half's direction)."""
    per = []
    for w, (S, c), u in zip(weights, sums, dirs, strict=True):
        if c.sum() == 0:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = (w @ S) / (w @ c)[:, None]
        per.append(_cos(np.nan_to_num(shift), u))
    return np.mean(per, axis=0) if per else np.full(len(weights[0]), np.nan)


def alignment(X: np.ndarray, sel: Rows, dirs: list[np.ndarray], conditions: list[str],
              controls: dict[str, str] | None = None, n_boot: int = 1000,
              seed: int = 0, reliable: bool = True) -> dict[str, Any]:
    """Per condition (not the baseline): cosine, interval, both nulls and the verdict."""
    templates = [sorted({sel.cluster[i] for i in range(len(sel.rows)) if sel.fold[i] == f})
                 for f in (0, 1)]
    halves = HalfShifts(X, sel, templates)
    rng = np.random.default_rng([seed, 1424])
    draws = [rng.multinomial(len(t), np.full(len(t), 1 / len(t)), size=n_boot) if t
             else np.zeros((n_boot, 0)) for t in templates]
    ones = [np.ones((1, len(t))) for t in templates]
    base = X[sel.of(BASELINE)]
    base = base[np.isfinite(base).all(1)]
    rand = rng.normal(size=(N_RANDOM, len(base))) @ (base - base.mean(0))
    iso = rng.normal(size=(N_RANDOM, X.shape[1]))
    cache: dict[str, Any] = {}

    def measure(cond: str) -> dict[str, Any]:
        if cond not in cache:
            sums = halves.sums(cond)
            n = int(sum(c.sum() for _, c in sums))
            mean_shift = [S.sum(0) / max(c.sum(), 1) for S, c in sums]
            def null_of(R: np.ndarray) -> np.ndarray:
                return np.mean([_cos(R, s) for s, (_, c) in zip(mean_shift, sums, strict=True)
                                if c.sum() > 0] or [np.zeros(N_RANDOM)], axis=0)
            cache[cond] = {"n": n, "n_clusters": int(sum((c > 0).sum() for _, c in sums)),
                           "cos": float(_stat(ones, sums, dirs)[0]),
                           "boot": _stat(draws, sums, dirs), "null": null_of(rand),
                           "iso": null_of(iso)}
        return cache[cond]

    out = {}
    for cond in conditions:
        if cond == BASELINE:
            continue
        m = measure(cond)
        control = (controls or {}).get(cond) or placebo_of(cond)
        if control not in conditions or control == cond:
            control = None
        p = float((1 + np.sum(np.abs(m["null"]) >= abs(m["cos"]) - 1e-12)) / (1 + N_RANDOM))
        rec: dict[str, Any] = {
            "cosine": m["cos"], "ci": list(percentile_interval(m["boot"])), "n_pairs": m["n"],
            "n_clusters": m["n_clusters"],
            "random": {"band_95": [float(np.percentile(m["null"], 2.5)),
                                   float(np.percentile(m["null"], 97.5))],
                       "p_value": p, "n_random": N_RANDOM,
                       "kind": "covariance of the baseline's states at this hook",
                       "isotropic_band_95": [float(np.percentile(m["iso"], 2.5)),
                                             float(np.percentile(m["iso"], 97.5))]},
            "placebo": None}
        if control is not None:
            c = measure(control)
            diff = m["boot"] - c["boot"]
            rec["placebo"] = {"condition": control, "cosine": c["cos"],
                              "ci": list(percentile_interval(c["boot"])),
                              "difference": m["cos"] - c["cos"],
                              "difference_ci": list(percentile_interval(diff))}
        rec["verdict"] = _verdict(rec) if reliable else (
            "undetermined (the concept direction is not reproducible across template halves)")
        out[cond] = rec
    return out


def _verdict(rec: dict[str, Any]) -> str:
    if rec["n_pairs"] < MIN_N or rec["n_clusters"] < 2:
        return f"undetermined (n={rec['n_pairs']}, {rec['n_clusters']} templates)"
    way = "away from" if rec["cosine"] < 0 else "toward"
    if rec["random"]["p_value"] >= ALPHA:
        return "not distinguishable from the control (random directions)"
    plc = rec["placebo"]
    if plc is not None:
        low, high = plc["difference_ci"]
        beyond = (low > 0) if rec["cosine"] > 0 else (high < 0)
        if not (np.isfinite(low) and np.isfinite(high)) or not beyond:
            return f"not distinguishable from the control ({plc['condition']})"
    return f"aligned {way} the stereotyped answer"
