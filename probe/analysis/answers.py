"""Shared helpers of the "inside the model" analyses (patching, steering, logit lens).

A run folder holds rows, not items, and a row lacks the option texts that re-rendering and
re-scoring need; so :func:`load_run` reloads the run's items with its own config
(:func:`probe.engine.study.load_items`), keeps those the run has rows for, and checks every
re-rendered prompt against the prompt stored in the row: if the data or the chat template
changed since the run, the analysis stops instead of silently measuring other prompts.

The metric is read at the answer position of the *letter prompt*: the item's final turn
rendered with the answer prefix "The answer is (" so that the next token is the option letter.
The biased letter is the item's ``target_index``; the unbiased one is the unknown answer on
ambiguous items and the label on disambiguated items where the label is not the biased answer.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from probe.conditions.prompts import render
from probe.conditions.registry import ANSWER_CUE, LETTERS, get_condition
from probe.config import RunConfig
from probe.data.items import Item
from probe.engine.continuation import option_token_ids, prompt_stem
from probe.engine.models import LoadedModel, load_model
from probe.errors import ConfigError, DataError
from probe.scoring.modes import LETTER_PREFIX, mode_prefix
from probe.scoring.stats import bootstrap_ci
from probe.store.runs import RunFolder

BASELINE = "baseline"
N_BOOT = 1000


@dataclass
class RunData:
    """A run's config, its reloaded items (load order) and its rows by (item_id, condition)."""

    path: Path
    config: RunConfig
    items: list[Item]
    rows: dict[tuple[str, str], dict[str, Any]]

    def row(self, item_id: str, condition: str) -> dict[str, Any] | None:
        """The row of one item under one condition (None if absent or truncated)."""
        row = self.rows.get((item_id, condition))
        return None if row is None or row.get("truncated") else row

    def conditions(self) -> list[str]:
        """Conditions present in the rows, in first-seen order."""
        return list(dict.fromkeys(c for _, c in self.rows))


def load_run(run_dir: str | Path, data_dir: str | Path | None = None,
             limit: int | None = None) -> RunData:
    """Open a run folder and reload its BBQ items (``data_dir`` overrides the run's).

    ``limit`` keeps N items per category: the stratified sample ``probe run --limit N``
    draws, which is the first N of any larger sample with the same seed, so it lies inside
    the run's items (``--limit`` means items per category in every command).
    """
    from probe.conditions.files import register_run_conditions
    from probe.engine.study import load_items

    folder = RunFolder.open(run_dir)
    register_run_conditions(folder.path)
    cfg = RunConfig.from_dict(folder.config)
    if data_dir is not None:
        cfg = replace(cfg, data_dir=str(data_dir))
    if limit is not None:
        if limit <= 0:
            raise ConfigError(f"--limit must be a positive integer, got {limit}")
        cfg = replace(cfg, limit=min(limit, cfg.limit or limit))
    if "bbq" not in cfg.benchmarks:
        raise ConfigError(f"run {run_dir} has no BBQ rows; these analyses need BBQ")
    cfg = replace(cfg, benchmarks=["bbq"])
    rows = {(str(r["item_id"]), str(r["condition"])): r for r in folder.rows()
            if r.get("benchmark") == "bbq"}
    if not rows:
        raise DataError("no BBQ rows in generations.jsonl", str(folder.generations))
    items, _ = load_items(cfg)
    wanted = {i for i, _ in rows}
    kept = [it for it in items if it.item_id in wanted]
    if limit is not None:
        chosen = {it.item_id for it in items}
        rows = {k: r for k, r in rows.items() if k[0] in chosen}
        wanted = {i for i, _ in rows}
    missing = wanted - {it.item_id for it in kept}
    if missing:
        raise DataError(f"{len(missing)} items of the run are not in the data at {cfg.data_dir} "
                        f"(first: {sorted(missing)[0]}); pass --data-dir", str(folder.path))
    return RunData(Path(run_dir), cfg, kept, rows)


def load_run_model(run: RunData, device: str | None = None) -> LoadedModel:
    """The run's model, on ``device`` (default: the run's device)."""
    cfg = run.config
    return load_model(cfg.model, device or cfg.device, cfg.dtype, cfg.trust_remote_code,
                      allow_pickle=cfg.allow_pickle)


def answer_pair(row: dict[str, Any]) -> tuple[int, int] | None:
    """(biased, unbiased) option indices of a row's item, or None when undefined."""
    meta = row.get("meta") or {}
    biased = meta.get("target_index")
    if biased is None:
        return None
    if row.get("context_condition") == "ambig":
        unbiased = meta.get("unknown_index")
    else:
        unbiased = row.get("label")
    if unbiased is None or unbiased == biased:
        return None
    return int(biased), int(unbiased)


def letter_token_ids(tokenizer: Any, n_options: int = 3) -> list[int]:
    """Token id of each option letter as it follows "The answer is (" (the tail of the
    joint tokenization, as the letter mode scores it: see :mod:`probe.engine.continuation`)."""
    context = ANSWER_CUE + LETTER_PREFIX  # the letter's left context in every letter prompt
    prompt_ids, tails = option_token_ids(tokenizer, context, LETTERS[:n_options])
    full = tokenizer(context, add_special_tokens=False).input_ids
    for letter, tail in zip(LETTERS, tails, strict=False):
        if len(tail) != 1 or len(prompt_ids) != len(full):
            raise ConfigError(f"option letter {letter!r} after {context!r} is not one "
                              f"token of its own for this tokenizer; the letter metric needs "
                              f"single tokens")
    return [int(tail[0]) for tail in tails]


def final_prompt(loaded: LoadedModel, item: Item, condition: str,
                 history: list[tuple[str, str]], extra_prefix: str,
                 system: str = "default") -> str:
    """The item's scored turn under ``condition`` with ``extra_prefix`` after its prefix."""
    final = get_condition(condition).build(item).final
    return render(loaded.tokenizer, loaded.chat, [tuple(h) for h in history],  # type: ignore[misc]
                  final.user, final.assistant_prefix + extra_prefix, system)


def letter_prompt(loaded: LoadedModel, run: RunData, item: Item, condition: str) -> str:
    """The letter prompt of one item under one condition, checked against the run's row.

    Earlier turns (chain-of-thought, a first answer) are taken from the row, not regenerated.
    """
    row = run.row(item.item_id, condition)
    if row is None:
        raise DataError(f"no row for {item.item_id} under {condition}", str(run.path))
    meta = row.get("meta") or {}
    history = [tuple(h) for h in meta.get("history") or []]
    system = run.config.system_prompt
    # The row's own scored turn (runs since conditions files) needs no condition code;
    # older rows are rebuilt from the registry.
    stored = meta.get("final_turn")
    user, prefix = stored if stored else _final(item, condition)
    tok, chat = loaded.tokenizer, loaded.chat
    as_run = render(tok, chat, history, user,  # type: ignore[arg-type]
                    prefix + mode_prefix(item, run.config.mode), system)
    if prompt_stem(as_run) != row["prompt"]:
        raise DataError(f"re-rendered prompt of {item.item_id} under {condition} differs from "
                        f"the run's (data or chat template changed?)", str(run.path))
    return render(tok, chat, history, user,  # type: ignore[arg-type]
                  prefix + LETTER_PREFIX, system)


def _final(item: Item, condition: str) -> tuple[str, str]:
    final = get_condition(condition).build(item).final
    return final.user, final.assistant_prefix


def mean_ci(values: np.ndarray | list[float], n_boot: int = N_BOOT, seed: int = 0,
            clusters: Sequence[Hashable] | None = None) -> dict[str, Any]:
    """Mean of ``values`` with a percentile-bootstrap 95% interval, ``n`` and ``n_clusters``.

    ``clusters`` (one key per value, e.g. :func:`item_clusters`) resamples whole clusters,
    as every metric of the run does: items made from one template are not independent, and
    resampling them one by one would give too narrow an interval. None: each value is its
    own cluster.
    """
    vals = np.asarray(values, dtype=float)
    if vals.size == 0:
        return {"mean": None, "ci": [None, None], "n": 0, "n_clusters": 0}
    keys = list(range(vals.size)) if clusters is None else list(clusters)
    cols = np.stack([vals, np.ones_like(vals)], axis=1)
    low, high = bootstrap_ci(cols, lambda s: s[:, 0] / s[:, 1], n_boot, seed, clusters=keys)
    return {"mean": float(vals.mean()), "ci": [_num(low), _num(high)], "n": int(vals.size),
            "n_clusters": len(set(keys))}


def cluster_of(item: Item) -> Hashable:
    """The cluster an item's metrics resample: its BBQ template (category x question index)
    or its Winogender occupation, the keys :mod:`probe.scoring` uses."""
    from probe.scoring import bbq, winogender

    row = {"category": item.category, "group": item.group, "meta": item.meta}
    return (winogender.cluster_key if item.benchmark == "winogender" else bbq.cluster_key)(row)


def item_clusters(run: RunData, item_ids: Sequence[str]) -> list[Hashable]:
    """:func:`cluster_of` each of ``item_ids`` (items of ``run``)."""
    by_id = {item.item_id: item for item in run.items}
    missing = [i for i in item_ids if i not in by_id]
    if missing:
        raise DataError(f"items {missing[:3]} are not among the run's reloaded items",
                        str(run.path))
    return [cluster_of(by_id[i]) for i in item_ids]


def _num(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)
