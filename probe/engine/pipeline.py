"""One batch of (item, condition) units through the model: the study's inner step.

:func:`run_batch` renders each unit's turns (generating the earlier ones: chain-of-thought
reasoning, a first answer to review), scores the final turn in the configured mode, and
returns rows plus the activations captured on the final prompt pass.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from probe.conditions.counterbalance import META_KEY, aggregate, cyclic_orders, shown
from probe.conditions.prompts import SYSTEM_DEFAULT, render
from probe.conditions.registry import Turn, get_condition
from probe.config import RunConfig
from probe.data.items import GenerationRow, Item, row_for
from probe.engine.continuation import join_answer, prompt_stem
from probe.engine.hooks import Capture
from probe.engine.inference import Engine, is_oom
from probe.engine.lengths import count_tokens
from probe.engine.rounds import RoundAnswers, round_tensors
from probe.scoring.modes import (
    answer_texts,
    mode_prefix,
    option_texts,
    pred_from_scores,
    pred_from_text,
)


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


def _histories(engine: Engine, asked: list[tuple[str, Item]], cfg: RunConfig,
               answers: RoundAnswers | None = None) -> list[list[tuple[str, str]]]:
    """Generate the answers to every turn before the scored one, per (condition, item);
    ``answers`` keeps the hooks at each turn's answer position (its last prompt token)."""
    plans = [get_condition(name).build(item) for name, item in asked]
    histories: list[list[tuple[str, str]]] = [[] for _ in asked]
    n_turns = max(len(p.turns) for p in plans)
    for t in range(n_turns - 1):
        idx = [i for i, p in enumerate(plans) if len(p.turns) - 1 > t]
        texts = [prompt_stem(render(engine.tokenizer, engine.loaded.chat, histories[i],
                                    plans[i].turns[t].user, plans[i].turns[t].assistant_prefix,
                                    cfg.system_prompt)) for i in idx]
        # A first turn already too long is not generated from (its final prompt, which
        # holds it, is refused as too long in run_batch).
        room = engine.loaded.n_ctx - cfg.reasoning_tokens
        fits = [j for j, text in enumerate(texts) if count_tokens(engine, text, room)[0] <= room]
        cap = answers.capture() if answers is not None and fits else None
        ran = engine.generate_batch([texts[j] for j in fits], cfg.reasoning_tokens,
                                    capture=cap) if fits else []
        if answers is not None and cap is not None:
            answers.record(t, [idx[j] for j in fits], cap)
        outs = [""] * len(texts)
        for j, out in zip(fits, ran, strict=True):
            outs[j] = out
        for i, out in zip(idx, outs, strict=True):
            turn = plans[i].turns[t]
            histories[i].append((turn.user, join_answer(turn.assistant_prefix, out)))
    return histories


def final_prompt(tokenizer: Any, chat: bool, item: Item, final: Turn,
                 history: list[tuple[str, str]], mode: str, system: str = SYSTEM_DEFAULT
                 ) -> tuple[str, list[str]]:
    """The scored turn's prompt as fed to the model and each option's continuation of it:
    prompt + continuation is the natural answer text (see :mod:`probe.engine.continuation`)."""
    rendered = render(tokenizer, chat, history, final.user,
                      final.assistant_prefix + mode_prefix(item, mode), system)
    return prompt_stem(rendered), option_texts(item, mode, rendered)


@dataclass(frozen=True)
class View:
    """One displayed order of a unit's options (the identity order unless counterbalanced)."""

    unit: int
    order: tuple[int, ...]
    item: Item


def plan_views(units: list[Unit], cfg: RunConfig) -> list[View]:
    """Every unit's views; BBQ units get all cyclic orders when counterbalancing."""
    views = []
    for u, unit in enumerate(units):
        n = len(unit.item.options)
        many = cfg.counterbalanced() and unit.item.benchmark == "bbq"
        views += [View(u, order, shown(unit.item, order))
                  for order in (cyclic_orders(n) if many else [tuple(range(n))])]
    return views


def run_batch(engine: Engine, units: list[Unit], cfg: RunConfig, capture: Capture | None,
              rounds: int = 0) -> tuple[list[GenerationRow], dict[str, torch.Tensor]]:
    """Score one batch; returns rows (in ``units`` order) and activations of the rows
    that ran (prompts too long for the model are refused, counted, and carry none).

    Activations come from the options' own order (the row's ``prompt``); the other orders
    of a counterbalanced unit are scored in a second pass without capture. With ``rounds``
    (and ``capture``) they also hold the answer positions of each row's first ``rounds``
    turns before the scored one (:mod:`probe.engine.rounds`).
    """
    views = plan_views(units, cfg)
    histories: list[list[tuple[str, str]]] = [[] for _ in views]
    got: list[dict[int, dict[str, torch.Tensor]]] = [{} for _ in views]
    for order in dict.fromkeys(v.order for v in views):  # one pass per order, batch-sized
        idx = [j for j, v in enumerate(views) if v.order == order]
        answers = RoundAnswers(capture.hook_names, len(idx)) if capture and rounds else None
        done = _histories(engine, [(units[views[j].unit].condition, views[j].item)
                                   for j in idx], cfg, answers)
        for k, (j, history) in enumerate(zip(idx, done, strict=True)):
            histories[j] = history
            got[j] = answers.got[k] if answers is not None else {}
    finals, options, turns = [], [], []
    for view, history in zip(views, histories, strict=True):
        final = get_condition(units[view.unit].condition).build(view.item).final
        turns.append([final.user, final.assistant_prefix])
        prompt, conts = final_prompt(engine.tokenizer, engine.loaded.chat, view.item, final,
                                     history, cfg.mode, cfg.system_prompt)
        finals.append(prompt)
        options.append(conts)
    budget = engine.loaded.n_ctx - (cfg.max_new_tokens if cfg.mode == "generate" else 8)
    counted = [count_tokens(engine, t, budget) for t in finals]
    lengths = [n for n, _ in counted]
    fits = [True] * len(units)
    for view, n in zip(views, lengths, strict=True):
        fits[view.unit] = fits[view.unit] and n <= budget
    first: dict[int, int] = {}
    for j, view in enumerate(views):
        first.setdefault(view.unit, j)
    # One pass per displayed order, each no larger than the batch (memory stays bounded).
    groups: dict[tuple[int, ...] | None, list[int]] = {None: []}
    for j, view in enumerate(views):
        if fits[view.unit]:
            groups.setdefault(None if j == first[view.unit] else view.order, []).append(j)
    outputs: dict[int, str] = {}
    scores: dict[int, list[float]] = {}
    acts: dict[str, torch.Tensor] = {}
    for key, group in groups.items():
        cap = capture if key is None else None
        outs, scs = _score(engine, [finals[j] for j in group], [options[j] for j in group],
                           cfg, cap)
        outputs.update(zip(group, outs, strict=True))
        scores.update(zip(group, scs or [], strict=False))
        if cap is not None and group:
            acts = cap.take()
            if rounds:
                acts.update(round_tensors([got[j] for j in group], cap.hook_names, rounds,
                                          engine.loaded.d_model))
    rows = []
    for u, unit in enumerate(units):
        mine = [j for j, v in enumerate(views) if v.unit == u]
        j0 = first[u]
        # The scored turn itself, so analyses re-render it without the condition's code.
        extra = {"n_prompt_tokens": lengths[j0],
                 "meta": {"history": histories[j0], "final_turn": turns[j0],
                          # a lower bound, for a prompt too long to be worth tokenizing
                          **({} if counted[j0][1] else {"n_prompt_tokens_at_least": True})}}
        if not fits[u]:
            rows.append(row_for(unit.item, unit.condition, cfg.mode, finals[j0], "", None,
                                truncated=True, **extra))
        elif j0 not in scores:
            rows.append(row_for(unit.item, unit.condition, cfg.mode, finals[j0], outputs[j0],
                                pred_from_text(unit.item, outputs[j0]), **extra))
        elif len(mine) == 1:
            rows.append(row_for(unit.item, unit.condition, cfg.mode, finals[j0], outputs[j0],
                                pred_from_scores(unit.item, scores[j0]),
                                option_scores=scores[j0], **extra))
        else:
            agg = aggregate(unit.item.item_id, [views[j].order for j in mine],
                            [scores[j] for j in mine])
            extra["meta"][META_KEY] = {  # type: ignore[index]
                "orders": [list(views[j].order) for j in mine],
                "scores": [scores[j] for j in mine], "picks": agg.picks,
                "histories": [histories[j] for j in mine]}
            output = answer_texts(unit.item, cfg.mode)[agg.pred]
            rows.append(row_for(unit.item, unit.condition, cfg.mode, finals[j0], output,
                                agg.pred, option_scores=agg.option_scores, **extra))
    return rows, acts


def _score(engine: Engine, texts: list[str], options: list[list[str]], cfg: RunConfig,
           capture: Capture | None) -> tuple[list[str], list[list[float]] | None]:
    if not texts:
        return [], None
    if capture is not None:
        capture.reset()
    if cfg.mode == "generate":
        return engine.generate_batch(texts, cfg.max_new_tokens, capture=capture), None
    scores = engine.option_logprobs_batch(texts, options, capture=capture)
    outputs = [opts[max(range(len(s)), key=lambda k: s[k])].strip() for opts, s in
               zip(options, scores, strict=True)]
    return outputs, scores


def run_batch_safe(engine: Engine, units: list[Unit], cfg: RunConfig, capture: Capture | None,
                   rounds: int = 0) -> tuple[list[GenerationRow], dict[str, torch.Tensor]]:
    """:func:`run_batch` that survives out-of-memory by splitting the batch in halves.

    Rows and activations come back in ``units`` order, as from one call. The size that
    worked is kept in ``engine.batch_size`` so later batches start there; the batch plan
    itself is untouched, so a resumed run still plans (and skips) the same batches.
    """
    size = max(1, engine.batch_size)
    if len(units) > size:
        parts = [units[i:i + size] for i in range(0, len(units), size)]
        return _join([run_batch_safe(engine, part, cfg, capture, rounds) for part in parts])
    try:
        return run_batch(engine, units, cfg, capture, rounds)
    except RuntimeError as err:
        if not is_oom(err) or len(units) == 1:
            raise
    # Retry outside the except block: the traceback would keep the failed batch's tensors.
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    half = (len(units) + 1) // 2
    engine.batch_size = half
    return _join([run_batch_safe(engine, units[:half], cfg, capture, rounds),
                  run_batch_safe(engine, units[half:], cfg, capture, rounds)])


def _join(parts: list[tuple[list[GenerationRow], dict[str, torch.Tensor]]]
          ) -> tuple[list[GenerationRow], dict[str, torch.Tensor]]:
    """Concatenate sub-batch results; parts whose prompts were all too long carry no acts."""
    rows = [row for part_rows, _ in parts for row in part_rows]
    acts = [a for _, a in parts if a]
    joined = {name: torch.cat([a[name] for a in acts]) for name in acts[0]} if acts else {}
    return rows, joined
