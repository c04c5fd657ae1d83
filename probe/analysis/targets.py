"""What each probe predicts: labels built from ``generations.jsonl`` rows.

A target picks the activations to probe (by ``(item_id, condition)`` key), a binary label
for each and the template ``group`` that keeps train and test apart. Names:

- ``condition:A[:B]``: rows of condition A (label 1) vs condition B (label 0, default
  ``baseline``); A and B may be globs, so ``condition:instruct-*`` is any instruction.
- ``biased_answer[:C]``: ambiguous BBQ rows, 1 when the model chose the biased answer
  (``pred == meta.target_index``); rows with no pred or no target are left out; pooled over
  conditions unless C (a glob) is given.
- ``correct[:C]``: BBQ rows, 1 when ``pred == label``; unparsed rows are left out.
- ``self_corrected:C[:SOURCE]``: ambiguous BBQ items whose *baseline* answer was parsed and
  not "unknown"; 1 when the answer under C is "unknown" (BBQ's correct answer in an
  ambiguous context), 0 when it is another option; each item once per condition (the
  placebo comparison: :mod:`probe.analysis.self_correction`). SOURCE, whose activations
  are probed: ``instructed`` (default, the C run: is the fix visible while answering?) or
  ``baseline`` (the baseline run: can the fix be predicted before the instruction?).

A target too small to probe is returned with ``skipped`` set to a reason, never raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np

from probe.errors import ConfigError, DataError, UnknownNameError
from probe.store.io import read_jsonl_numbered

Key = tuple[str, str]
BASELINE = "baseline"
INSTRUCTION_GLOBS = ("instruct-*", "negate-*")
FAMILIES = ("condition", "biased_answer", "correct", "self_corrected")


@dataclass
class Target:
    """One probe target: activation keys, binary labels and template groups (aligned)."""

    name: str
    keys: list[Key] = field(default_factory=list)
    y: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    groups: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    skipped: str | None = None
    n_missing_acts: int = 0

    def summary(self) -> dict[str, Any]:
        """n, class balance and template count, JSON-ready."""
        n_pos = int(self.y.sum())
        return {
            "n": len(self.y), "n_pos": n_pos, "n_neg": len(self.y) - n_pos,
            "pos_frac": n_pos / len(self.y) if len(self.y) else None,
            "n_groups": len(set(self.groups.tolist())),
            "n_missing_acts": self.n_missing_acts, "skipped": self.skipped,
        }


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Generation rows of a run (a torn last line is dropped, as for every run log).

    A malformed line, or a row without ``item_id``, ``condition`` or ``group``, raises
    :class:`DataError` naming the file and line.
    """
    rows = []
    for line, row in read_jsonl_numbered(path):
        missing = [k for k in ("item_id", "condition", "group") if k not in row]
        if missing:
            raise DataError(f"row lacks {', '.join(missing)}", str(path), line)
        rows.append(row)
    return rows


def meta_field(row: dict[str, Any], name: str) -> Any:
    """A benchmark field from the row's ``meta`` (or the row itself for flat rows)."""
    meta = row.get("meta") or {}
    return meta.get(name, row.get(name))


def conditions_in(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Condition names present in the rows, in first-seen order."""
    return list(dict.fromkeys(r["condition"] for r in rows))


def instruction_conditions(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Every condition but the baseline (built-in or from a conditions file), in first-seen
    order: each one's contrast with the baseline is probed and gets a direction."""
    return [c for c in conditions_in(rows) if c != BASELINE]


def default_target_names(rows: list[dict[str, Any]]) -> list[str]:
    """The targets probed when none are named: each non-baseline condition against the
    baseline (a user's own conditions included), then the answer targets.

    Answer targets default to the baseline rows: pooled over conditions, an instruction
    that lowers bias would let a probe score by recognising the condition instead.
    """
    conds = conditions_in(rows)
    names = [f"condition:{c}" for c in instruction_conditions(rows)]
    names += [f"biased_answer:{BASELINE}", f"correct:{BASELINE}"]
    if any(fnmatchcase(c, "instruct-*") for c in conds):
        names.append("self_corrected:instruct-*")
    return names


def _is_bbq(row: dict[str, Any]) -> bool:
    return str(row.get("benchmark", "")).startswith("bbq")


def _is_biased(row: dict[str, Any]) -> bool | None:
    """Whether the row's answer is the biased one; None when undecidable."""
    target = meta_field(row, "target_index")
    if row.get("pred") is None or target is None:
        return None
    return bool(row["pred"] == target)


def _ambig_bbq(row: dict[str, Any]) -> bool:
    return _is_bbq(row) and row.get("context_condition") == "ambig"


def _labels_condition(rows: list[dict[str, Any]], pos: str, neg: str = BASELINE) -> list:
    return [((r["item_id"], r["condition"]), int(fnmatchcase(r["condition"], pos)), r["group"])
            for r in rows
            if fnmatchcase(r["condition"], pos) != fnmatchcase(r["condition"], neg)]


def _labels_biased(rows: list[dict[str, Any]], cond: str = "*") -> list:
    out = []
    for r in rows:
        biased = _is_biased(r) if _ambig_bbq(r) and fnmatchcase(r["condition"], cond) else None
        if biased is not None:
            out.append(((r["item_id"], r["condition"]), int(biased), r["group"]))
    return out


def _labels_correct(rows: list[dict[str, Any]], cond: str = "*") -> list:
    return [((r["item_id"], r["condition"]), int(r["pred"] == r["label"]), r["group"])
            for r in rows
            if _is_bbq(r) and fnmatchcase(r["condition"], cond)
            and r.get("pred") is not None and r.get("label") is not None]


def _labels_self_corrected(rows: list[dict[str, Any]], cond: str,
                           source: str = "instructed") -> list:
    if source not in ("instructed", "baseline"):
        raise UnknownNameError("self_corrected source", source, ["instructed", "baseline"])
    matched = [c for c in conditions_in(rows) if c != BASELINE and fnmatchcase(c, cond)]
    if source == "baseline" and len(matched) > 1:  # one baseline row would get two labels
        raise ConfigError(f"self_corrected:{cond}:baseline needs one condition, "
                          f"{cond!r} matches {', '.join(matched)}")
    from probe.analysis.self_correction import eligible_items, is_unknown  # it imports us

    eligible, seen, out = eligible_items(rows), set(), []
    for r in rows:
        key = (r["item_id"], r["condition"])
        if r["condition"] not in matched or r["item_id"] not in eligible or key in seen:
            continue
        unknown = is_unknown(r)
        if unknown is not None:  # each item once per condition
            seen.add(key)
            act_key = key if source == "instructed" else (r["item_id"], BASELINE)
            out.append((act_key, int(unknown), r["group"]))
    return out


_BUILDERS: dict[str, Callable[..., list]] = {
    "condition": _labels_condition, "biased_answer": _labels_biased,
    "correct": _labels_correct, "self_corrected": _labels_self_corrected,
}


def build_target(name: str, rows: list[dict[str, Any]], available: set[Key] | None = None,
                 *, min_per_class: int = 5, min_groups: int = 2) -> Target:
    """Build target ``name`` from generation rows.

    ``available`` is the set of keys that have activations; labelled rows without them are
    dropped and counted. The target is skipped (with a reason) when either class has fewer
    than ``min_per_class`` rows or there are fewer than ``min_groups`` templates.
    """
    family, *args = name.split(":")
    if family not in _BUILDERS:
        raise UnknownNameError("probe target", family, FAMILIES)
    if family in ("condition", "self_corrected") and not args:
        raise UnknownNameError(f"{family} target (needs a condition)", name, [f"{family}:<cond>"])
    labelled = _BUILDERS[family](rows, *args)
    n_before = len(labelled)
    if available is not None:
        labelled = [t for t in labelled if t[0] in available]
    target = Target(
        name=name, keys=[t[0] for t in labelled],
        y=np.array([t[1] for t in labelled], dtype=int),
        groups=np.array([str(t[2]) for t in labelled], dtype=object),
        n_missing_acts=n_before - len(labelled),
    )
    target.skipped = _skip_reason(target, min_per_class, min_groups)
    return target


def _skip_reason(target: Target, min_per_class: int, min_groups: int) -> str | None:
    if len(target.y) == 0:
        return "no rows match this target"
    counts = np.bincount(target.y, minlength=2)
    if counts.min() == 0:
        return f"single class (all {int(np.argmax(counts))}; n={len(target.y)})"
    if counts.min() < min_per_class:
        return (f"too few rows per class (neg={counts[0]}, pos={counts[1]}; "
                f"need {min_per_class} each)")
    n_groups = len(set(target.groups.tolist()))
    if n_groups < min_groups:
        return f"too few templates for grouped splits ({n_groups} < {min_groups})"
    return None


# --- Activations: the X side of a target -------------------------------------------------

def hook_layer(hook: str) -> int | None:
    """Layer of a residual hook: -1 for ``hook_embed``, L for ``blocks.L.hook_resid_post``."""
    if hook == "hook_embed":
        return -1
    parts = hook.split(".")
    if len(parts) == 3 and parts[0] == "blocks" and parts[2] == "hook_resid_post":
        return int(parts[1])
    return None


def select_hooks(hook_names: Iterable[str], layers: Iterable[int] | None = None) -> list[str]:
    """Residual-stream hooks (embed and resid_post), optionally only the given layers."""
    wanted = None if layers is None else set(layers)
    found = [(hook_layer(h), h) for h in hook_names]
    return [h for layer, h in sorted((lh for lh in found if lh[0] is not None),
                                     key=lambda lh: lh[0] or 0)
            if wanted is None or layer in wanted]


def key_index(store_rows: list[dict[str, Any]], position: int = -1) -> dict[Key, int]:
    """(item_id, condition) -> row index in the store; the first copy of a key wins.

    At a generated-token ``position`` (>= 0), rows whose answer ended before that token
    (their ``n_steps``) hold zeros there and are left out; so are rows at a prompt offset
    ``-j`` whose prompt had fewer than ``j`` tokens (their ``n_prompt_positions``).
    """
    index: dict[Key, int] = {}
    for i, meta in enumerate(store_rows):
        if position >= 0 and int(meta.get("n_steps", 0)) <= position:
            continue
        # Prompt offset -j on a prompt shorter than j tokens: a zero column, not a position.
        if position < 0 and int(meta.get("n_prompt_positions", -position)) < -position:
            continue
        index.setdefault((meta["item_id"], meta["condition"]), i)
    return index


class ArraySource:
    """An activation store over in-memory arrays aligned with generation rows.

    Same duck type as ``probe.activations.ActivationStore`` (``rows``, ``hook_names``,
    ``load``), so probes run on arrays in tests and notebooks without a run folder.
    """

    def __init__(self, arrays: dict[str, Any], rows: list[dict[str, Any]]):
        self.arrays = {h: np.asarray(a, dtype=np.float32) for h, a in arrays.items()}
        self.rows = [{"row": i, "item_id": r["item_id"], "condition": r["condition"],
                      "positions": [-1]} for i, r in enumerate(rows)]
        self.hook_names = list(arrays)

    def load(self, hook_name: str, rows: list[int] | None = None, position: int = -1) -> Any:
        """The (n, d) array of one hook (``position`` is ignored: one position per row)."""
        import torch

        data = self.arrays[hook_name]
        return torch.from_numpy(data if rows is None else data[rows])


def open_store(run_dir: Path) -> Any:
    """The run's activation store; :class:`DataError` when the run has none."""
    acts = run_dir / "activations"
    if not acts.exists():
        raise DataError("no activations in this run (run with activation caching first)",
                        str(acts))
    from probe.activations import ActivationStore  # imported late: pure code must not need it

    return ActivationStore(acts)


def load_matrix(store: Any, hook: str, position: int = -1) -> np.ndarray:
    """All rows of one hook as float64 (n, d), in store-row order."""
    return np.asarray(store.load(hook, rows=None, position=position).numpy(), dtype=np.float64)
