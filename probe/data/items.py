"""The nouns every stage shares: an :class:`Item` (one benchmark question) and a
:class:`GenerationRow` (one item under one condition, as written to ``generations.jsonl``).

Scoring reads only rows, never the model, so a row carries every item field that a
metric needs (``target_index``, ``unknown_index``, ``bls_pct_female``...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Winogender predictions and the pronoun families that count for each.
PRONOUN_FAMILIES: dict[str, dict[str, str]] = {
    "male": {"nom": "he", "acc": "him", "poss": "his"},
    "female": {"nom": "she", "acc": "her", "poss": "her"},
    "neutral": {"nom": "they", "acc": "them", "poss": "their"},
}
GENDERS: tuple[str, ...] = ("male", "female", "neutral")


@dataclass(frozen=True)
class Item:
    """One benchmark question, independent of how it is prompted.

    ``options`` are the answer texts in their official order (BBQ: ans0..ans2; Winogender:
    the male, female and neutral pronoun in the blank's case). ``group`` names the template
    the item was made from, so probes can split train/test without sharing a template.
    ``meta`` holds benchmark-specific fields that scoring needs (copied into every row).
    """

    item_id: str
    benchmark: str
    context: str
    question: str
    options: tuple[str, ...]
    label: int | None
    category: str
    group: str
    context_condition: str | None = None
    question_polarity: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class GenerationRow:
    """One item under one condition: the exact prompt, the model's output and its answer.

    ``pred`` is the answer index (BBQ, 0..2) or pronoun gender (Winogender: "male",
    "female", "neutral"), or ``None`` when the output could not be parsed.
    ``option_scores`` holds the per-option log-probabilities in likelihood modes.
    ``options`` are the item's answer texts in their official order, kept so that re-scoring
    can re-read a generated answer without the data files (:mod:`probe.scoring.repredict`).
    """

    benchmark: str
    item_id: str
    condition: str
    prompt: str
    output: str
    pred: int | str | None
    category: str
    context_condition: str | None
    question_polarity: str | None
    label: int | None
    group: str
    mode: str
    option_scores: list[float] | None = None
    n_prompt_tokens: int | None = None
    truncated: bool = False
    options: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The row as a plain dict, one line of ``generations.jsonl``."""
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> GenerationRow:
        """Inverse of :meth:`to_json`; unknown keys are kept in ``meta``."""
        names = set(cls.__dataclass_fields__)
        known = {k: v for k, v in row.items() if k in names}
        extra = {k: v for k, v in row.items() if k not in names}
        if extra:
            known["meta"] = {**known.get("meta", {}), **extra}
        return cls(**known)

    @property
    def key(self) -> tuple[str, str]:
        """The (item_id, condition) pair that identifies the row within a run."""
        return (self.item_id, self.condition)


def row_for(item: Item, condition: str, mode: str, prompt: str, output: str,
            pred: int | str | None, **extra: Any) -> GenerationRow:
    """Build a row from an item, carrying the item's scoring fields into ``meta``."""
    return GenerationRow(
        benchmark=item.benchmark, item_id=item.item_id, condition=condition, prompt=prompt,
        output=output, pred=pred, category=item.category,
        context_condition=item.context_condition, question_polarity=item.question_polarity,
        label=item.label, group=item.group, mode=mode, options=list(item.options),
        meta={**item.meta, **extra.pop("meta", {})}, **extra,
    )
