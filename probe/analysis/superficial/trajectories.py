"""Trajectories: each condition's mean projection on the concept direction, layer by layer.

Per hook (layer x component: resid_post, attn_out, mlp_out, as cached) and condition, the
mean over the condition's analysed rows of the projection on the held-out unit concept
direction (:mod:`probe.analysis.superficial.project`), with a 95% percentile bootstrap
interval that resamples templates (:func:`probe.scoring.stats.bootstrap_ci`). A multi-turn
condition whose earlier rounds are cached (``review``: round 0 is the first answer's
position) gets one trajectory per earlier round (``round`` 0, ...); ``round`` None is the
row's final (scored) answer position, for every condition. Next to them, the behaviour of
the *same rows*: per context the BBQ bias score with its template interval
(:func:`probe.scoring.bbq.cell_metrics`) and the share of rows that chose the stereotyped
answer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from probe.analysis.superficial import concept
from probe.analysis.superficial.project import Rows, project, rounds_of, states, stereotyped
from probe.scoring import bbq
from probe.scoring.stats import bootstrap_ci

CONTEXTS = ("ambig", "disambig")


def mean_ci(values: np.ndarray, clusters: list[str], n_boot: int, seed: int
            ) -> dict[str, Any]:
    """Mean of the finite ``values`` with a template-clustered 95% interval."""
    ok = np.isfinite(values)
    vals, keys = values[ok], [c for c, k in zip(clusters, ok, strict=True) if k]
    if vals.size == 0:
        return {"mean": None, "ci": [None, None], "n": 0, "n_clusters": 0}
    cols = np.stack([vals, np.ones_like(vals)], axis=1)
    low, high = bootstrap_ci(cols, lambda s: s[:, 0] / s[:, 1], n_boot, seed, clusters=keys)
    return {"mean": float(vals.mean()), "ci": [low, high], "n": int(vals.size),
            "n_clusters": len(set(keys))}


def behaviour(sel: Rows, condition: str, n_boot: int, seed: int) -> dict[str, Any]:
    """Bias score per context (template intervals) and stereotyped-answer share of the
    condition's analysed rows."""
    pos = sel.of(condition)
    rows = [sel.rows[i] for i in pos]
    out: dict[str, Any] = {}
    for ctx in CONTEXTS:
        mine = [r for r in rows if r.get("context_condition") == ctx]
        cell = bbq.cell_metrics(mine, ctx, n_boot, seed)
        share = mean_ci(stereotyped(mine), [str(bbq.cluster_key(r)) for r in mine], n_boot, seed)
        out[ctx] = {"bias_score": cell["bias_score"], "bias_score_ci": cell["bias_score_ci"],
                    "accuracy": cell["accuracy"], "n": cell["n"],
                    "n_clusters": cell["n_clusters"], "stereotyped_share": share}
    return out


def trajectories(run: Any, sel: Rows, vectors: dict[str, np.ndarray], contrast: str,
                 hooks: list[str], n_boot: int = 1000, seed: int = 0,
                 position: int = -1) -> dict[str, Any]:
    """Per hook, condition (and cached review round) the mean projection with its interval;
    per condition the behaviour of the same rows."""
    conditions = list(dict.fromkeys(sel.condition))
    rounds = {c: rounds_of(run.cache, c) for c in conditions}
    records = []
    for hook in hooks:
        layer, comp = concept.component_of(hook) or (None, None)
        units = concept.unit(vectors, contrast, hook)
        z_final = project(states(run, hook, sel, None, position), units, sel.fold)
        for cond in conditions:
            pos = sel.of(cond)
            keys = [sel.cluster[i] for i in pos]
            base = {"hook": hook, "layer": layer, "component": comp, "condition": cond}
            records.append({**base, "round": None, **mean_ci(z_final[pos], keys, n_boot, seed)})
            for r in range(rounds[cond] - 1):  # the last round is the final position
                z = project(states(run, hook, sel, r), units, sel.fold)
                records.append({**base, "round": r, **mean_ci(z[pos], keys, n_boot, seed)})
    multi = {str(r["condition"]) for r in sel.rows if (r.get("meta") or {}).get("history")}
    missing = [c for c in conditions if c in multi and rounds[c] == 0]
    return {
        "records": records,
        "behaviour": {c: behaviour(sel, c, n_boot, seed) for c in conditions},
        "rounds": {c: n for c, n in rounds.items() if n > 1},
        "rounds_note": (None if not missing else
                        "earlier review rounds are not cached in this run (final answer "
                        f"position only) for: {', '.join(missing)}"),
    }
