"""The control of a patching study: does a placebo instruction move the readout as much?

Patching localises the readout gap between an instruction and its counterpart. If a neutral
instruction of the same frame and length (``placebo-k``, :mod:`probe.conditions.placebo`)
moves the readout as far, the gap is about "an instruction was added", not about its content.
So every study whose run has the matching placebo rows records, on the same items, the
placebo's gap to the same counterpart and the paired difference instruction - placebo with a
95% bootstrap interval; an interval containing 0 reads "not distinguishable from the
control". Readouts are the run's own (:mod:`probe.analysis.readout`).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from probe.analysis import answers as ans
from probe.analysis import readout as ro
from probe.engine.inference import Engine

NOT_DISTINGUISHABLE = "not distinguishable from the control"
MIN_ITEMS = 5  # fewer items make the bootstrap interval degenerate (one item: [x, x])


def default_control(run: ans.RunData, source: str) -> str | None:
    """``placebo-k`` for an ``instruct-k``/``negate-k`` source when the run has its rows."""
    match = re.fullmatch(r"(?:instruct|negate)-(\d+)", source)
    name = f"placebo-{match.group(1)}" if match else None
    return name if name is not None and name in run.conditions() else None


def item_readouts(run: ans.RunData, engine: Engine, condition: str, item_ids: list[str]
                  ) -> dict[str, float]:
    """Per item, the run's readout under ``condition`` (orders averaged)."""
    items = {it.item_id: it for it in run.items}
    queries = [q for i in item_ids if i in items
               for q in ro.item_queries(run, engine, items[i], condition)]
    values: list[float] = []
    for start in range(0, len(queries), engine.batch_size):
        batch = queries[start:start + engine.batch_size]
        values += ro.score(engine, run.config.mode, batch).tolist()
    ids, means = ro.item_means([q.item_id for q in queries], np.array(values))
    return {i: float(v) for i, v in zip(ids, means, strict=True) if np.isfinite(v)}


def control_block(run: ans.RunData, engine: Engine, control: str, source: str, target: str,
                  item_ids: list[str], src: np.ndarray, tgt: np.ndarray) -> dict[str, Any]:
    """The control's gap to ``target`` and the instruction-minus-control difference."""
    from probe.analysis.patch_study import gap_summary

    found = item_readouts(run, engine, control, item_ids)
    keep = [k for k, i in enumerate(item_ids) if i in found]
    ctrl = np.array([found[item_ids[k]] for k in keep])
    s, t = src[keep], tgt[keep]
    clusters = ans.item_clusters(run, [item_ids[k] for k in keep])
    diff = ans.mean_ci(s - ctrl, clusters=clusters)
    verdict, note = control_verdict(diff, len(keep))
    return {"name": control, "source": control, "target": target, "n": len(keep),
            "gap": gap_summary(ctrl, t, clusters=clusters), f"{source}_minus_control": diff,
            "verdict": verdict, "note": note}


def control_verdict(diff: dict[str, Any], n: int) -> tuple[str, str | None]:
    """Verdict on the instruction-minus-control difference, and why when it cannot differ:
    an interval containing 0, or fewer than MIN_ITEMS items or templates (the interval
    resamples templates, so fewer make it degenerate)."""
    low, high = diff.get("ci") or [None, None]
    if n < MIN_ITEMS:
        return NOT_DISTINGUISHABLE, (f"n={n} items: too few for an interval (at least "
                                     f"{MIN_ITEMS})")
    k = diff.get("n_clusters", n)
    if k < MIN_ITEMS:
        return NOT_DISTINGUISHABLE, (f"{k} templates among the {n} items: too few for an "
                                     f"interval (at least {MIN_ITEMS})")
    if low is None or high is None or low <= 0 <= high:
        return NOT_DISTINGUISHABLE, None
    # which side: an instruction that moves the readout less than a neutral placebo also
    # "differs", and must not read as an effect beyond it
    side = "larger" if low > 0 else "smaller"
    return f"differs from the control (the instruction gap is {side})", None
