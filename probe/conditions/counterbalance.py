"""Option-order counterbalancing for BBQ's likelihood modes.

Small models have an answer-position habit: they favour a displayed letter whatever it
labels. probe shows every item's options in each cyclic order (abc, bca, cab), scores each
order, and un-permutes: every original option is shown once at every position.

Aggregation (see docs/methods.md, "Answer order"): per order, the option scores are
normalised over the options (log-softmax), mapped back to the original options, and
averaged over the orders; the answer is the option with the highest mean. If a model's
choice factors as a position prior times a content preference (Zheng et al. 2024, "Large
Language Models Are Not Robust Multiple Choice Selectors", arXiv:2309.03882), the prior adds
the same sum of log-priors to every option across the cyclic orders and cancels exactly;
a pure position habit leaves all options tied (each 1/3). Exact ties (a model with no
content preference) are broken by a hash of the item id, never by position.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace

from probe.data.items import Item

META_KEY = "counterbalance"
_TIE = 1e-9


def cyclic_orders(n: int) -> list[tuple[int, ...]]:
    """The ``n`` cyclic orders; ``order[p]`` is the original option shown at position p."""
    return [tuple((p + k) % n for p in range(n)) for k in range(n)]


def shown(item: Item, order: tuple[int, ...]) -> Item:
    """``item`` with its options displayed in ``order`` (label and answer indices follow)."""
    if order == tuple(range(len(order))):
        return item
    position = {orig: pos for pos, orig in enumerate(order)}
    meta = dict(item.meta)
    for key in ("unknown_index", "target_index"):
        if isinstance(meta.get(key), int):
            meta[key] = position[meta[key]]
    label = None if item.label is None else position[item.label]
    return replace(item, options=tuple(item.options[i] for i in order), label=label, meta=meta)


@dataclass(frozen=True)
class Aggregate:
    """One item's counterbalanced answer."""

    option_scores: list[float]  # mean normalised log-prob per original option
    pred: int  # original option index
    picks: list[int]  # displayed position chosen in each order (the position habit)


def _normalised(scores: list[float]) -> list[float]:
    top = max(scores)
    lse = top + math.log(sum(math.exp(s - top) for s in scores))
    return [s - lse for s in scores]


def aggregate(item_id: str, orders: list[tuple[int, ...]],
              view_scores: list[list[float]]) -> Aggregate:
    """Un-permute each order's scores (given in displayed order) and average them."""
    n = len(orders[0])
    totals = [0.0] * n
    picks = []
    for order, scores in zip(orders, view_scores, strict=True):
        picks.append(max(range(n), key=lambda p: scores[p]))
        for pos, value in enumerate(_normalised(scores)):
            totals[order[pos]] += value
    means = [t / len(orders) for t in totals]
    best = max(means)
    tied = [i for i, m in enumerate(means) if best - m <= _TIE * max(1.0, abs(best))]
    digest = int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "big")
    return Aggregate(means, tied[digest % len(tied)], picks)
