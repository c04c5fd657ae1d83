"""Re-read every row's answer from what the model produced, never from a stored ``pred``.

A run's rows keep the model's raw evidence: the generated text (generate mode), the option
log-probabilities (text and letter modes) and, for counterbalanced rows, every order's
scores. Re-scoring derives the answer from that evidence with the current rules (the parser's
table of unknown phrasings, the counterbalancing aggregation), so a fix to a rule reaches old
runs through ``probe score RUN`` without rerunning the model; the stored ``pred`` is only the
answer the run's own version of probe read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from probe.conditions.counterbalance import META_KEY, aggregate
from probe.config import MODES
from probe.data.items import Item
from probe.errors import DataError
from probe.scoring.modes import pred_from_scores, pred_from_text


@dataclass(frozen=True)
class Repredicted:
    """Rows with their answers re-read, and which keys' answers changed."""

    rows: list[dict[str, Any]]
    changed: list[tuple[str, str]]


def item_of(row: dict[str, Any]) -> Item:
    """The scoring view of a row's item: its options, label and scoring fields."""
    options = row.get("options")
    if not isinstance(options, list) or not options:
        raise DataError(f"row {row.get('item_id')!r} / {row.get('condition')!r} has no "
                        f"'options', so its answer cannot be re-read; re-run it with probe run")
    return Item(item_id=row["item_id"], benchmark=row["benchmark"], context="", question="",
                options=tuple(options), label=row.get("label"), category=row["category"],
                group=row.get("group", ""), context_condition=row.get("context_condition"),
                question_polarity=row.get("question_polarity"), meta=dict(row.get("meta") or {}))


def answer_of(row: dict[str, Any]) -> int | str | None:
    """The answer a row's evidence gives under the current rules. Rows that no model run
    wrote (predictions scored with ``probe score FILE``) keep the answer read then."""
    if row.get("mode") not in MODES:
        return row.get("pred")
    if row.get("truncated"):
        return None
    item = item_of(row)
    balanced = (row.get("meta") or {}).get(META_KEY)
    if balanced:
        orders = [tuple(order) for order in balanced["orders"]]
        return aggregate(item.item_id, orders, balanced["scores"]).pred
    scores = row.get("option_scores")
    if scores is not None:
        return pred_from_scores(item, scores)
    return pred_from_text(item, row.get("output") or "")


def repredict(rows: Iterable[dict[str, Any]]) -> Repredicted:
    """Every row with ``pred`` re-read from its evidence (copies; the input is unchanged)."""
    out, changed = [], []
    for row in rows:
        pred = answer_of(row)
        if pred != row.get("pred"):
            changed.append((row["item_id"], row["condition"]))
        out.append({**row, "pred": pred})
    return Repredicted(out, changed)
