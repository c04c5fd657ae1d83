"""Rows, folds and projections on the concept direction, shared by the superficial analyses.

A row is analysed when it is a BBQ row whose item has a single stereotyped answer, whose
activations are stored and whose template was dealt to a half when the directions were fit
(:mod:`probe.analysis.superficial.concept`). Its projection at a hook is ``x . u`` with
``u`` the *unit* concept direction fitted on the other half's templates, in the units of the
activations themselves (positive: toward the stereotyped answer).

Review rounds: when the activation cache stores each round's answer position
(``cache.at_round(hook, round)`` and ``cache.n_rounds(condition)``), a multi-turn
condition's rounds are projected the same way; runs without them have the final position
only, and the analyses say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from probe.analysis.superficial import concept
from probe.scoring import bbq

BASELINE = "baseline"


@dataclass
class Rows:
    """The analysed rows of a run: indices into ``run.rows``, their halves and clusters."""

    index: np.ndarray  # (n,) int: rows of run.rows
    fold: np.ndarray  # (n,) int: the half of each row's template
    cluster: list[str]  # template of each row (category x question_index)
    condition: list[str]
    item: list[str]
    rows: list[dict[str, Any]]

    def of(self, condition: str) -> np.ndarray:
        """Positions (into this selection) of one condition's rows."""
        return np.array([i for i, c in enumerate(self.condition) if c == condition], dtype=int)


def analysed_rows(run: Any, folds: dict[str, int], items: set[str] | None = None) -> Rows:
    """The run's analysed rows (module doc); ``items`` restricts them to those item ids."""
    mask = run.cache.mask.tolist()
    keep = [i for i, r in enumerate(run.rows)
            if r.get("benchmark") == "bbq" and bbq.has_target(r) and mask[i]
            and str(bbq.cluster_key(r)) in folds
            and (items is None or str(r["item_id"]) in items)]
    rows = [run.rows[i] for i in keep]
    clusters = [str(bbq.cluster_key(r)) for r in rows]
    return Rows(np.array(keep, dtype=int), np.array([folds[c] for c in clusters], dtype=int),
                clusters, [str(r["condition"]) for r in rows], [str(r["item_id"]) for r in rows],
                rows)


def states(run: Any, hook: str, sel: Rows, round_: int | None = None,
           position: int = -1) -> np.ndarray:
    """(n, d) float64 activations of the selected rows at ``position`` (or a review round's
    answer position); NaN rows where a row has none."""
    if round_ is None:
        col = run.cache.position(position)
        X = run.cache[hook][:, col]
    else:
        X = run.cache.at_round(hook, round_)
    return np.asarray(X[sel.index].numpy(), dtype=np.float64)


def project(X: np.ndarray, units: list[np.ndarray], fold: np.ndarray) -> np.ndarray:
    """Each row's projection on its half's unit direction."""
    U = np.stack(units)[fold]
    return np.einsum("nd,nd->n", X, U)


def rounds_of(cache: Any, condition: str) -> int:
    """Rounds :meth:`~probe.store.act_rounds.RoundsView.at_round` reads for ``condition``: 1
    for a single-turn condition, 2 for ``review``; 0 where earlier rounds were not cached
    (runs cached before rounds were stored)."""
    n_rounds = getattr(cache, "n_rounds", None)
    if not callable(n_rounds) or not callable(getattr(cache, "at_round", None)):
        return 0
    try:
        return int(n_rounds(condition))
    except (KeyError, ValueError):
        return 0


def hooks_to_analyse(cache_hooks: list[str], index: dict[str, Any]) -> list[str]:
    """Hooks both cached and with a stored direction, by layer then component."""
    have = set(index.get("hooks") or [])
    order = list(concept.COMPONENTS)
    found = [(lc[0], order.index(lc[1]), h) for h in cache_hooks
             if h in have and (lc := concept.component_of(h)) is not None]
    return [h for _, _, h in sorted(found)]


def stereotyped(rows: list[dict[str, Any]]) -> np.ndarray:
    """1 where a row answered its stereotyped option, 0 for another parsed answer, NaN
    when the answer was not parsed."""
    out = np.full(len(rows), np.nan)
    for i, r in enumerate(rows):
        if r.get("pred") is not None:
            out[i] = float(r["pred"] == (r.get("meta") or {}).get("target_index"))
    return out
