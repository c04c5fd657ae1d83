"""Conditions written as data (YAML or JSON), as lm-eval and inspect users write tasks.

A file is a list of conditions, or a mapping with a ``conditions`` list. Each condition::

    - name: be-fair                     # required; letters, digits, - _ .
      description: Question + a fairness reminder.
      source: my paper, 2025             # default: "user file"
      benchmarks: [bbq, winogender]      # default: both
      instruction: "Please be fair about {dimension}."   # on a new line after the question

or, for several turns (every turn but the last is answered by free generation)::

      turns:
        - user: "{question}"
          assistant_prefix: "Let me think step by step."
        - user: "So, which answer is right?"   # the last turn's prefix defaults to
                                                # "{answer_prefix}"

Placeholders: ``{question}`` (the benchmark question with its options, as every built-in
condition asks it), ``{context}``, ``{dimension}`` (the social dimension, e.g. "age"),
``{category}`` and ``{answer_prefix}`` (Winogender: the sentence up to the blank). Nothing
else is substituted and no code runs: a file is data.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Any

from probe.conditions.registry import (
    DIMENSIONS,
    Condition,
    PromptPlan,
    Turn,
    answer_prefix,
    question_text,
)
from probe.data.items import Item

BENCHMARKS = ("bbq", "winogender")
PLACEHOLDERS = ("question", "context", "dimension", "category", "answer_prefix")
FIELDS = ("name", "description", "source", "benchmarks", "instruction", "turns")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SpecError(ValueError):
    """A problem with one field of one condition: ``index`` (0-based) and ``field``."""

    def __init__(self, message: str, index: int | None = None, field: str | None = None,
                 name: str | None = None):
        super().__init__(message)
        self.index, self.field, self.name = index, field, name

    def where(self) -> str:
        """``condition 2 ('be-fair'), field 'instruction'`` (as much as is known)."""
        parts = []
        if self.index is not None:
            parts.append(f"condition {self.index + 1}" + (f" ({self.name!r})" if self.name
                                                           else ""))
        if self.field is not None:
            parts.append(f"field {self.field!r}")
        return ", ".join(parts)


def _values(item: Item) -> dict[str, str]:
    return {"question": question_text(item), "context": item.context,
            "dimension": DIMENSIONS.get(item.category,
                                        item.category.replace("_", " ").lower()),
            "category": item.category, "answer_prefix": answer_prefix(item)}


def check_template(text: Any, field: str) -> str:
    """A template string whose only placeholders are :data:`PLACEHOLDERS`."""
    if not isinstance(text, str):
        raise SpecError(f"expected text, got {type(text).__name__}", field=field)
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:  # a lone "{" or "}"
        raise SpecError(f"{exc} (write {{{{ and }}}} for literal braces)", field=field) from exc
    for name in names:
        if name not in PLACEHOLDERS:
            raise SpecError(f"unknown placeholder {{{name}}}; valid: "
                            + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS), field=field)
    return text


def _turns(spec: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(user, assistant_prefix or None for the default) templates of a condition."""
    if ("instruction" in spec) == ("turns" in spec):
        raise SpecError("give exactly one of 'instruction' or 'turns'", field="instruction")
    if "instruction" in spec:
        return [("{question}\n" + check_template(spec["instruction"], "instruction"), None)]
    turns = spec["turns"]
    if not isinstance(turns, list) or not turns:
        raise SpecError("expected a non-empty list of turns", field="turns")
    out: list[tuple[str, str | None]] = []
    for t, turn in enumerate(turns):
        where = f"turns[{t}]"
        if not isinstance(turn, dict) or "user" not in turn:
            raise SpecError("expected a mapping with 'user' (and 'assistant_prefix')",
                            field=where)
        extra = set(turn) - {"user", "assistant_prefix"}
        if extra:
            raise SpecError(f"unknown key {sorted(extra)[0]!r}", field=where)
        prefix = turn.get("assistant_prefix")
        out.append((check_template(turn["user"], f"{where}.user"),
                    None if prefix is None else check_template(prefix,
                                                               f"{where}.assistant_prefix")))
    return out


def _builder(templates: list[tuple[str, str | None]]) -> Callable[[Item], PromptPlan]:
    def build(item: Item) -> PromptPlan:
        values = _values(item)
        last = len(templates) - 1
        turns = []
        for t, (user, prefix) in enumerate(templates):
            default = "{answer_prefix}" if t == last else ""
            turns.append(Turn(user.format(**values),
                              (default if prefix is None else prefix).format(**values)))
        return PromptPlan(tuple(turns))

    return build


def condition_from_spec(spec: Any, index: int) -> Condition:
    """One :class:`Condition` from its mapping; :class:`SpecError` names the bad field."""
    if not isinstance(spec, dict):
        raise SpecError(f"expected a mapping, got {type(spec).__name__}", index)
    name = spec.get("name")
    try:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise SpecError(f"name {name!r} must be text of letters, digits, '-', '_', '.'",
                            field="name")
        unknown = [k for k in spec if k not in FIELDS]
        if unknown:
            raise SpecError(f"unknown field; valid: {', '.join(FIELDS)}", field=str(unknown[0]))
        benchmarks = spec.get("benchmarks", list(BENCHMARKS))
        if isinstance(benchmarks, str):
            benchmarks = [benchmarks]
        if not isinstance(benchmarks, list) or not benchmarks or \
                any(b not in BENCHMARKS for b in benchmarks):
            raise SpecError(f"{benchmarks!r}: expected a list of {', '.join(BENCHMARKS)}",
                            field="benchmarks")
        for key in ("description", "source"):
            if not isinstance(spec.get(key, ""), str):
                raise SpecError("expected text", field=key)
        build = _builder(_turns(spec))
    except SpecError as err:
        raise SpecError(str(err), index, err.field, name if isinstance(name, str) else None) \
            from None
    return Condition(name, spec.get("description", ""), spec.get("source", "user file"),
                     tuple(benchmarks), build)


def conditions_from_data(data: Any) -> list[Condition]:
    """Every condition of a parsed file (a list, or a mapping with ``conditions``)."""
    if isinstance(data, dict) and set(data) == {"conditions"}:
        data = data["conditions"]
    if not isinstance(data, list) or not data:
        raise SpecError("expected a non-empty list of conditions (or 'conditions:' holding "
                        "one)")
    out = [condition_from_spec(spec, i) for i, spec in enumerate(data)]
    names = [c.name for c in out]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise SpecError("name used twice in this file", i, "name", name)
    return out
