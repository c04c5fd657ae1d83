"""One batch of (item, condition) units through the model: the study's inner step.

:func:`run_batch` renders each unit's turns (generating the earlier ones: chain-of-thought
reasoning, a first answer to review), scores the final turn in the configured mode, and
returns rows plus the activations captured on the final prompt pass.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from probe.conditions import get_condition
from probe.config import RunConfig
from probe.hooks import Capture
from probe.inference import Engine, is_oom
from probe.items import GenerationRow, Item, row_for
from probe.prompts import render
from probe.scoring_modes import mode_prefix, option_texts, pred_from_scores, pred_from_text


@dataclass(frozen=True)
class Unit:
    """One item asked under one condition."""

    item: Item
    condition: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.item.item_id, self.condition)


def in_shard(item_id: str, shard: tuple[int, int] | None) -> bool:
    """Deterministic, order-free assignment of items to shards (a hash of the id)."""
    if shard is None:
        return True
    digest = hashlib.sha256(item_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % shard[1] == shard[0]


def plan_units(items: list[Item], conditions: list[str]) -> list[Unit]:
    """Units in the canonical order: condition by condition, items in load order."""
    units = []
    for name in conditions:
        cond = get_condition(name)
        units += [Unit(item, name) for item in items if item.benchmark in cond.benchmarks]
    return units


def plan_batches(units: list[Unit], batch_size: int) -> list[list[Unit]]:
    """Fixed batches: per condition, sorted by first-prompt length so padding stays small.

    The batching depends only on the units, so a resumed run rebuilds the same batches.
    """
    batches: list[list[Unit]] = []
    by_condition: dict[str, list[Unit]] = {}
    for unit in units:
        by_condition.setdefault(unit.condition, []).append(unit)
    for group in by_condition.values():
        lengths = [len(get_condition(u.condition).build(u.item).turns[0].user) for u in group]
        order = sorted(range(len(group)), key=lambda i: (-lengths[i], i))
        ordered = [group[i] for i in order]
        batches += [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]
    return batches


def _histories(engine: Engine, units: list[Unit], cfg: RunConfig) -> list[list[tuple[str, str]]]:
    """Generate the answers to every turn before the scored one."""
    plans = [get_condition(u.condition).build(u.item) for u in units]
    histories: list[list[tuple[str, str]]] = [[] for _ in units]
    n_turns = max(len(p.turns) for p in plans)
    for t in range(n_turns - 1):
        idx = [i for i, p in enumerate(plans) if len(p.turns) - 1 > t]
        texts = [render(engine.tokenizer, engine.loaded.chat, histories[i],
                        plans[i].turns[t].user, plans[i].turns[t].assistant_prefix,
                        cfg.system_prompt) for i in idx]
        outs = engine.generate_batch(texts, cfg.reasoning_tokens) if texts else []
        for i, out in zip(idx, outs, strict=True):
            turn = plans[i].turns[t]
            histories[i].append((turn.user, (turn.assistant_prefix + " " + out).strip()))
    return histories


def run_batch(engine: Engine, units: list[Unit], cfg: RunConfig,
              capture: Capture | None) -> tuple[list[GenerationRow], dict[str, torch.Tensor]]:
    """Score one batch; returns rows (in ``units`` order) and activations of the rows
    that ran (prompts too long for the model are refused, counted, and carry none)."""
    histories = _histories(engine, units, cfg)
    finals, prefixes, turns = [], [], []
    for unit, history in zip(units, histories, strict=True):
        final = get_condition(unit.condition).build(unit.item).final
        turns.append([final.user, final.assistant_prefix])
        prefix = final.assistant_prefix + mode_prefix(unit.item, cfg.mode)
        prefixes.append(prefix)
        finals.append(render(engine.tokenizer, engine.loaded.chat, history, final.user, prefix,
                             cfg.system_prompt))
    lengths = [engine.n_tokens(t) for t in finals]
    budget = engine.loaded.n_ctx - (cfg.max_new_tokens if cfg.mode == "generate" else 8)
    ok = [i for i, n in enumerate(lengths) if n <= budget]
    outputs, scores = _score(engine, [units[i] for i in ok], [finals[i] for i in ok],
                             [prefixes[i] for i in ok], cfg, capture)
    rows = []
    for i, unit in enumerate(units):
        # The scored turn itself, so analyses re-render it without the condition's code.
        extra = {"n_prompt_tokens": lengths[i],
                 "meta": {"history": histories[i], "final_turn": turns[i]}}
        if i in ok:
            j = ok.index(i)
            pred = (pred_from_text(unit.item, outputs[j]) if scores is None
                    else pred_from_scores(unit.item, scores[j]))
            row = row_for(unit.item, unit.condition, cfg.mode, finals[i], outputs[j], pred,
                          option_scores=None if scores is None else scores[j], **extra)
        else:
            row = row_for(unit.item, unit.condition, cfg.mode, finals[i], "", None,
                          truncated=True, **extra)
        rows.append(row)
    acts = capture.take() if capture is not None and ok else {}
    return rows, {name: t for name, t in acts.items()} if ok else {}


def _score(engine: Engine, units: list[Unit], texts: list[str], prefixes: list[str],
           cfg: RunConfig, capture: Capture | None
           ) -> tuple[list[str], list[list[float]] | None]:
    if not units:
        return [], None
    if capture is not None:
        capture.reset()
    if cfg.mode == "generate":
        return engine.generate_batch(texts, cfg.max_new_tokens, capture=capture), None
    options = [option_texts(u.item, cfg.mode, p) for u, p in zip(units, prefixes, strict=True)]
    scores = engine.option_logprobs_batch(texts, options, capture=capture)
    outputs = [opts[max(range(len(s)), key=lambda k: s[k])] for opts, s in
               zip(options, scores, strict=True)]
    return outputs, scores


def run_batch_safe(engine: Engine, units: list[Unit], cfg: RunConfig, capture: Capture | None
                   ) -> tuple[list[GenerationRow], dict[str, torch.Tensor]]:
    """:func:`run_batch` that survives out-of-memory by splitting the batch in halves.

    Rows and activations come back in ``units`` order, as from one call. The size that
    worked is kept in ``engine.batch_size`` so later batches start there; the batch plan
    itself is untouched, so a resumed run still plans (and skips) the same batches.
    """
    size = max(1, engine.batch_size)
    if len(units) > size:
        parts = [units[i:i + size] for i in range(0, len(units), size)]
        return _join([run_batch_safe(engine, part, cfg, capture) for part in parts])
    try:
        return run_batch(engine, units, cfg, capture)
    except RuntimeError as err:
        if not is_oom(err) or len(units) == 1:
            raise
    # Retry outside the except block: the traceback would keep the failed batch's tensors.
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    half = (len(units) + 1) // 2
    engine.batch_size = half
    return _join([run_batch_safe(engine, units[:half], cfg, capture),
                  run_batch_safe(engine, units[half:], cfg, capture)])


def _join(parts: list[tuple[list[GenerationRow], dict[str, torch.Tensor]]]
          ) -> tuple[list[GenerationRow], dict[str, torch.Tensor]]:
    """Concatenate sub-batch results; parts whose prompts were all too long carry no acts."""
    rows = [row for part_rows, _ in parts for row in part_rows]
    acts = [a for _, a in parts if a]
    joined = {name: torch.cat([a[name] for a in acts]) for name in acts[0]} if acts else {}
    return rows, joined
