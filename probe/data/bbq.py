"""Load BBQ (official JSONL, one file per category) into :class:`probe.data.items.Item`.

The biased answer of each item (``meta["target_index"]``) is derived as in the official
BBQ analysis (``analysis_scripts/BBQ_results_metadata.R``): the non-unknown answer whose
group is a stereotyped group is the *target*; a negative question's biased answer is the
target, a non-negative question's biased answer is the other non-unknown answer. Unlike
the R script (which takes the first match) we set ``None`` when zero or both answers
match, and the report counts those items.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from probe.data.items import Item
from probe.data.registry import BBQ_CATEGORIES, LoadReport
from probe.errors import ConfigError, DataError, UnknownNameError

CATEGORIES = BBQ_CATEGORIES
ANSWER_KEYS = ("ans0", "ans1", "ans2")
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "example_id": int, "question_index": (str, int), "question_polarity": str,
    "context_condition": str, "category": str, "answer_info": dict,
    "additional_metadata": dict, "context": str, "question": str,
    "ans0": str, "ans1": str, "ans2": str, "label": int,
}
_GENDER = {"m": "m", "man": "m", "men": "m", "boy": "m", "boys": "m", "male": "m",
           "f": "f", "woman": "f", "women": "f", "girl": "f", "girls": "f", "female": "f"}
HOW_TO_GET = "run `probe data download` (or set PROBE_DATA_DIR to a folder holding bbq/)"


def _norm(tag: str) -> str:
    """Normalise an answer tag or stereotyped group so the two vocabularies meet."""
    t = tag.strip().lower()
    if t in _GENDER:
        return _GENDER[t]
    # "trans", "trans_F", "transgender women" all name the trans group; same for nonTrans.
    if t.startswith("nontrans"):
        return "nontrans"
    if t.startswith("trans"):
        return "trans"
    # name-based Race tags carry the name's gender first ("F-Black").
    return re.sub(r"^[mf]-", "", t)


def _matches(key: str, groups: set[str], intersectional: bool) -> bool:
    """Whether an answer (by tag or, for Nationality, text) belongs to a stereotyped group."""
    if _norm(key) in groups:
        return True
    if not intersectional or "-" not in key:
        return False
    # Intersectional tags ("F-Black", "lowSES-M-Black"): every part must be stereotyped;
    # gender parts count only when the groups mention a gender at all.
    parts = [_norm(p) for p in key.split("-") if p]
    if not groups & {"m", "f"}:
        parts = [p for p in parts if p not in ("m", "f")]
    return bool(parts) and all(p in groups for p in parts)


def derive_target(row: dict[str, Any], unknown_index: int) -> int | None:
    """The index of the answer a biased model picks, or None when not exactly one matches."""
    category = row["category"]
    groups = {_norm(g) for g in row["additional_metadata"].get("stereotyped_groups", [])}
    others = [i for i in range(3) if i != unknown_index]
    info = row["answer_info"]
    # Nationality tags are regions; the stereotyped groups are nationalities (the text).
    pos = 0 if category == "Nationality" else 1
    hits = [i for i in others
            if _matches(info[ANSWER_KEYS[i]][pos], groups, "_x_" in category)]
    if len(hits) != 1:
        return None
    if row["question_polarity"] == "neg":
        return hits[0]
    return next(i for i in others if i != hits[0])


def _check_fields(row: Any, path: str, line: int) -> None:
    """Raise DataError naming file:line for a missing or mistyped BBQ field."""
    if not isinstance(row, dict):
        raise DataError("expected a JSON object", path, line)
    for name, kind in _FIELDS.items():
        if name not in row:
            raise DataError(f"missing field {name!r}", path, line)
        if not isinstance(row[name], kind) or isinstance(row[name], bool):
            raise DataError(f"field {name!r} has type {type(row[name]).__name__}", path, line)
    for key in ANSWER_KEYS:
        tag = row["answer_info"].get(key)
        if not (isinstance(tag, list) and len(tag) == 2 and all(isinstance(t, str) for t in tag)):
            raise DataError(f"answer_info.{key} must be [text, tag]", path, line)
    if row["label"] not in (0, 1, 2):
        raise DataError(f"label {row['label']} not in 0..2", path, line)
    if row["context_condition"] not in ("ambig", "disambig"):
        raise DataError(f"bad context_condition {row['context_condition']!r}", path, line)
    if row["question_polarity"] not in ("neg", "nonneg"):
        raise DataError(f"bad question_polarity {row['question_polarity']!r}", path, line)
    groups = row["additional_metadata"].get("stereotyped_groups", [])
    # A bare string would be read letter by letter ("old" -> o, l, d) and match nothing.
    if not (isinstance(groups, list) and all(isinstance(g, str) for g in groups)):
        raise DataError("additional_metadata.stereotyped_groups must be a list of strings, "
                        f"got {type(groups).__name__}", path, line)


def item_from_bbq_row(row: Any, path: str, line: int) -> Item:
    """Validate one official BBQ row and turn it into an :class:`Item`.

    Raises :class:`DataError` naming ``path:line`` for a missing or mistyped field.
    """
    _check_fields(row, path, line)
    tags = [row["answer_info"][k][1] for k in ANSWER_KEYS]
    unknown = [i for i, tag in enumerate(tags) if tag.lower() == "unknown"]
    if len(unknown) != 1:
        raise DataError(f"expected exactly one 'unknown' answer, found {len(unknown)}", path, line)
    category, meta_in = row["category"], row["additional_metadata"]
    return Item(
        item_id=f"bbq:{category}:{row['example_id']}",
        benchmark="bbq",
        context=row["context"],
        question=row["question"],
        options=tuple(row[k] for k in ANSWER_KEYS),
        label=row["label"],
        category=category,
        group=f"bbq:{category}:{row['question_index']}",
        context_condition=row["context_condition"],
        question_polarity=row["question_polarity"],
        meta={
            "example_id": row["example_id"],
            "question_index": str(row["question_index"]),
            "unknown_index": unknown[0],
            "target_index": derive_target(row, unknown[0]),
            "stereotyped_groups": list(meta_in.get("stereotyped_groups", [])),
            "subcategory": meta_in.get("subcategory"),
        },
    )


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line; DataError names file:line."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"not UTF-8 text (byte {err.start} of the line); is this a "
                                f"JSONL file?", str(path), number) from None
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as err:
                raise DataError(f"malformed JSON ({err.msg})", str(path), number) from None


def load_bbq_file(path: Path) -> list[Item]:
    """All items of one category file; an empty file is an error.

    Every row must carry the file's category (``Age.jsonl`` holds ``"Age"`` rows) and a
    distinct ``example_id``: a repeated line would be run and counted twice (narrower
    intervals), and a reused id would make two items share one key.
    """
    items = []
    seen: dict[int, int] = {}  # example_id -> line
    expected = path.stem if path.stem in CATEGORIES else None
    for number, row in read_jsonl(path):
        item = item_from_bbq_row(row, str(path), number)
        if expected is not None and item.category != expected:
            raise DataError(f"category {item.category!r} in the file of {expected!r}; each "
                            f"category has its own file", str(path), number)
        first = seen.setdefault(row["example_id"], number)
        if first != number:
            raise DataError(f"example_id {row['example_id']} is also on line {first}: each item "
                            f"must appear once (remove the repeated line)", str(path), number)
        items.append(item)
    if not items:
        raise DataError("file holds no BBQ items", str(path))
    return items


def _resolve(categories: list[str] | None) -> list[str]:
    """Canonical category names (case-insensitive), or all of them."""
    if categories is None:
        return list(CATEGORIES)
    by_lower = {c.lower(): c for c in CATEGORIES}
    resolved = []
    for name in categories:
        if name.lower() not in by_lower:
            raise UnknownNameError("BBQ category", name, CATEGORIES)
        resolved.append(by_lower[name.lower()])
    return list(dict.fromkeys(resolved))


def polarity_key(item: Item) -> tuple[str, str, str | None, str, tuple[str, ...]]:
    """What a negative question and its non-negative partner share: category, template
    (question_index), context condition and the fill (context text and answer set)."""
    return (item.category, str(item.meta.get("question_index")), item.context_condition,
            item.context, tuple(sorted(item.options)))


def polarity_pairs(items: list[Item]) -> list[list[int]]:
    """Indices of items grouped as [negative, non-negative] partners, in file order; an
    item without a partner in ``items`` forms a group of its own."""
    groups: dict[tuple[str, str, str | None, str, tuple[str, ...]], dict[str, list[int]]] = {}
    for index, item in enumerate(items):
        by_pol = groups.setdefault(polarity_key(item), {})
        by_pol.setdefault(str(item.question_polarity), []).append(index)
    units: list[list[int]] = []
    for by_pol in groups.values():
        negs, nonnegs = by_pol.get("neg", []), by_pol.get("nonneg", [])
        units += [[a, b] for a, b in zip(negs, nonnegs, strict=False)]
        units += [[i] for i in negs[len(nonnegs):] + nonnegs[len(negs):]]
    return units


def stratified_sample(items: list[Item], limit: int, rng: random.Random) -> list[Item]:
    """Up to ``limit`` items, drawn as whole negative/non-negative pairs (same template and
    fill), spread as evenly as possible over ambiguous and disambiguated contexts; original
    order is kept.

    BBQ's bias score lets the two polarities of one fill cancel (a model that always picks
    the first-named person scores 0); sampling rows independently breaks that. An odd
    ``limit`` ends with one item whose partner is left out.
    """
    cells: dict[str | None, list[list[int]]] = {}
    for unit in polarity_pairs(items):
        cells.setdefault(items[unit[0]].context_condition, []).append(unit)
    # Pools are popped from the end: pairs first, in a seeded order; unpaired items last.
    pools = {}
    for key, units in sorted(cells.items(), key=str):
        pairs = [u for u in units if len(u) == 2]
        singles = [u for u in units if len(u) == 1]
        pools[key] = rng.sample(singles, len(singles)) + rng.sample(pairs, len(pairs))
    chosen: list[int] = []
    remaining = min(limit, len(items))
    order = rng.sample(sorted(pools, key=str), len(pools))
    while remaining:
        for key in order:
            if remaining and pools[key]:
                unit = pools[key].pop()
                take = unit if len(unit) <= remaining else [rng.choice(unit)]
                chosen += take
                remaining -= len(take)
    return [items[i] for i in sorted(chosen)]


def load_bbq(data_dir: Path | str, categories: list[str] | None = None,
             limit: int | None = None, seed: int = 0) -> tuple[list[Item], LoadReport]:
    """BBQ items from ``<data_dir>/bbq/<Category>.jsonl`` for the present categories.

    ``limit`` is items per category, a seeded sample of whole negative/non-negative pairs
    balanced over ambig/disambig (see :func:`stratified_sample`). Missing categories are
    listed in the report, not an error, unless none of the requested ones is present.
    """
    if limit is not None and limit <= 0:
        raise ConfigError(f"limit must be positive, got {limit}")
    wanted = _resolve(categories)
    folder = Path(data_dir) / "bbq"
    if not folder.is_dir():
        raise DataError(f"no BBQ data folder; {HOW_TO_GET}", str(folder))
    report = LoadReport(benchmark="bbq")
    items: list[Item] = []
    for category in wanted:
        path = folder / f"{category}.jsonl"
        if not path.is_file():
            report.missing.append(category)
            continue
        loaded = load_bbq_file(path)
        if limit is not None:
            loaded = stratified_sample(loaded, limit, random.Random(f"{seed}:{category}"))
        report.counts[category] = len(loaded)
        report.no_target[category] = sum(it.meta["target_index"] is None for it in loaded)
        items.extend(loaded)
    if not items:
        raise DataError(f"none of {', '.join(wanted)} is present; {HOW_TO_GET}", str(folder))
    return items, report
