"""The analyses' readout: the behaviour's own score, in the run's scoring mode.

Patching, the logit lens and steering explain one number per item, and it is the number the
run scored, not a proxy: the run's prompt (as stored in its row) runs through the same packed
prompt+options pass that ``probe run`` scored (:meth:`probe.engine.inference.Engine.pack_batch`,
:meth:`~probe.engine.inference.Engine.packed_logprobs`), and the readout is

- ``text``: mean log-prob per token of the unbiased option's text minus that of the biased
  option's text (the run's ``option_scores`` difference);
- ``letter``: log-prob of the unbiased option letter minus the biased one's after
  "The answer is (" (again the ``option_scores`` difference);
- ``generate``: the log-prob difference of the first answer token that tells the two answers
  apart: the options' texts as continuations of the prompt, teacher-forced over the tokens
  they share (often "The"), read at the first token where they differ. A generate run stores
  no scores, so this is the closest quantity the model's greedy answer turns on.

Positive values favour the unbiased answer. With no hook attached the readout equals the
run's stored score difference (tested), so "no patch" and "alpha = 0" reproduce the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from probe.analysis import answers as ans
from probe.conditions.prompts import render
from probe.conditions.registry import get_condition, question_text
from probe.data.items import Item
from probe.engine.hooks import HookFn
from probe.engine.inference import Engine
from probe.engine.packing import Packed
from probe.errors import DataError
from probe.scoring.modes import mode_prefix, option_texts

MODES = ("text", "letter", "generate")
DEFINITIONS = {
    "text": "mean log-prob per token of the unbiased option text minus the biased option "
            "text, as the run scored them (option_scores difference)",
    "letter": "log-prob of the unbiased option letter minus the biased letter after "
              "'The answer is (' (option_scores difference)",
    "generate": "log-prob of the unbiased minus the biased answer text at the first answer "
                "token where the two differ (shared leading tokens teacher-forced)",
}


@dataclass(frozen=True)
class Query:
    """One row's scored prompt, its options as scored, and the two options compared."""

    item_id: str
    condition: str
    prompt: str
    options: tuple[str, ...]
    biased: int
    unbiased: int
    stored: tuple[float, ...] | None  # the run's option_scores (likelihood modes)
    view: int = 0  # which displayed option order (counterbalanced runs)


def readout_meta(mode: str) -> dict[str, Any]:
    """The ``"readout"`` block every analysis JSON carries."""
    return {"mode": mode, "definition": DEFINITIONS[mode],
            "sign": "positive favours the unbiased answer", "units": "nats (log-prob)",
            "code_path": "Engine.pack_batch + packed_logprobs (the run's option scoring)"}


def item_queries(run: ans.RunData, engine: Engine, item: Item, condition: str
                 ) -> list[Query]:
    """The readout queries of one item under one condition: one per displayed option order
    the run scored (every cyclic order when it counterbalanced BBQ options, see
    :mod:`probe.conditions.counterbalance`), else just the row's own. Empty: no row or no
    answer pair.

    With counterbalancing the run's score of an option is its log-softmax over the options,
    averaged over the orders; a difference of two options' log-softmaxes is the difference
    of their raw scores, so the run's readout is the mean over orders of each order's
    readout, which is how every analysis combines these queries (:func:`item_means`).
    """
    row = run.row(item.item_id, condition)
    pair = None if row is None else ans.answer_pair(row)
    if row is None or pair is None:
        return []
    from probe.conditions.counterbalance import META_KEY, shown

    first = _view_query(run, engine, item, condition, row, pair, tuple(range(len(item.options))))
    balance = (row.get("meta") or {}).get(META_KEY)
    if not balance:
        return [first]
    out = []
    for k, order in enumerate(balance["orders"]):
        order = tuple(order)
        if order == tuple(range(len(order))):
            out.append(first)
            continue
        history = [tuple(h) for h in (balance.get("histories") or [[]] * (k + 1))[k]]
        view = shown(item, order)
        user, prefix = _view_turn(row, item, view, condition)
        prefix = prefix + mode_prefix(view, run.config.mode)
        prompt = render(engine.tokenizer, engine.loaded.chat, history,  # type: ignore[arg-type]
                        user, prefix, run.config.system_prompt)
        where = {orig: pos for pos, orig in enumerate(order)}
        scores = balance["scores"][k]
        out.append(Query(item.item_id, condition, prompt,
                         tuple(option_texts(view, run.config.mode, prefix)),
                         where[pair[0]], where[pair[1]], tuple(float(x) for x in scores), k))
    return out


def _view_turn(row: dict[str, Any], item: Item, view: Item, condition: str
               ) -> tuple[str, str]:
    """The scored turn with the options shown in another order: the row's own turn with its
    question swapped for the reordered one (no condition code needed), else rebuilt."""
    stored = (row.get("meta") or {}).get("final_turn")
    if stored and question_text(item) in stored[0]:
        return stored[0].replace(question_text(item), question_text(view), 1), stored[1]
    final = get_condition(condition).build(view).final
    return final.user, final.assistant_prefix


def _view_query(run: ans.RunData, engine: Engine, item: Item, condition: str,
                row: dict[str, Any], pair: tuple[int, int], order: tuple[int, ...]) -> Query:
    """The query of the row's own prompt (the options in their original order), checked
    against the prompt the run stored."""
    mode = run.config.mode
    meta = row.get("meta") or {}
    history = [tuple(h) for h in meta.get("history") or []]
    # The row's own scored turn (runs since conditions files) needs no condition code;
    # older rows are rebuilt from the registry.
    stored_turn = meta.get("final_turn")
    user, prefix = stored_turn if stored_turn else ans._final(item, condition)
    prefix = prefix + mode_prefix(item, mode)
    prompt = render(engine.tokenizer, engine.loaded.chat, history,  # type: ignore[arg-type]
                    user, prefix, run.config.system_prompt)
    if prompt != row["prompt"]:
        raise DataError(f"re-rendered prompt of {item.item_id} under {condition} differs from "
                        f"the run's (data or chat template changed?)", str(run.path))
    options = option_texts(item, "text" if mode == "generate" else mode, prefix)
    balance = meta.get("counterbalance")
    stored = balance["scores"][0] if balance else row.get("option_scores")
    return Query(item.item_id, condition, prompt, tuple(options), pair[0], pair[1],
                 None if stored is None else tuple(float(s) for s in stored))


def query(run: ans.RunData, engine: Engine, item: Item, condition: str) -> Query | None:
    """The row's own query (first displayed order), or None."""
    found = item_queries(run, engine, item, condition)
    return found[0] if found else None


def item_means(item_ids: list[str], values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Average rows (axis 0 of ``values``) that belong to the same item (its displayed
    orders), keeping first-seen item order."""
    order = list(dict.fromkeys(item_ids))
    index = {i: k for k, i in enumerate(order)}
    sums = np.zeros((len(order), *values.shape[1:]))
    counts = np.zeros(len(order))
    for i, v in zip(item_ids, values, strict=True):
        sums[index[i]] += v
        counts[index[i]] += 1
    return order, sums / counts.reshape(-1, *([1] * (values.ndim - 1)))


def pack(engine: Engine, queries: list[Query]) -> Packed:
    """The packed rows of a batch of queries, as the run packed them."""
    return engine.pack_batch([q.prompt for q in queries], [list(q.options) for q in queries])


def differing_token(packed: Packed, b: int, q: Query) -> int | None:
    """Index of the first token where the unbiased and biased options differ (generate)."""
    u, v = packed.conts[b][q.unbiased], packed.conts[b][q.biased]
    for j, (x, y) in enumerate(zip(u, v, strict=False)):
        if x != y:
            return j
    return None


def option_pair(mode: str, packed: Packed, logprobs: torch.Tensor, queries: list[Query]
                ) -> torch.Tensor:
    """Scores (B, 2) of the unbiased and the biased option (NaN where undefined): mean
    log-prob per token (text, letter) or log-prob at the first differing token (generate)."""
    if mode != "generate":
        means = Engine.option_means(packed, logprobs)
        return torch.tensor([[m[q.unbiased], m[q.biased]] for m, q in
                             zip(means, queries, strict=True)], dtype=torch.float64)
    out = []
    lp = logprobs.double().cpu()
    for b, q in enumerate(queries):
        j = differing_token(packed, b, q)
        if j is None:
            out.append([float("nan")] * 2)
            continue
        pair = []
        for k in (q.unbiased, q.biased):
            # Token 0 is read at the prompt's last column, token j at tail column j - 1.
            col = packed.prompt_end[b] - 1 if j == 0 else packed.tail_cols[b][k][j - 1]
            pair.append(float(lp[b, col - packed.first_read, packed.conts[b][k][j]]))
        out.append(pair)
    return torch.tensor(out, dtype=torch.float64)


def values(mode: str, packed: Packed, logprobs: torch.Tensor, queries: list[Query]
           ) -> torch.Tensor:
    """The readout (float64, one per packed row; NaN where undefined) from log-probs."""
    pair = option_pair(mode, packed, logprobs, queries)
    return pair[:, 0] - pair[:, 1]


def score(engine: Engine, mode: str, queries: list[Query],
          hooks: list[tuple[str, HookFn]] | None = None) -> torch.Tensor:
    """The readout of one batch of queries with ``hooks`` attached (none: the run's)."""
    packed = pack(engine, queries)
    return values(mode, packed, engine.packed_logprobs(packed, hooks or []), queries)


def stored_value(q: Query) -> float | None:
    """The run's own score difference for a query (likelihood modes), else None."""
    if q.stored is None:
        return None
    return q.stored[q.unbiased] - q.stored[q.biased]


def row_value(row: dict[str, Any]) -> float | None:
    """The readout of a scored row from its own option_scores (likelihood modes), else None."""
    pair, scores = ans.answer_pair(row), row.get("option_scores")
    if pair is None or not scores:
        return None
    return float(scores[pair[1]] - scores[pair[0]])


def rows_readout(engine: Engine, run: ans.RunData, rows: list[dict[str, Any]],
                 hooks: list[tuple[str, HookFn]]) -> list[float | None]:
    """Per-row readout of re-scored rows (None where a row has none), aligned with ``rows``:
    from their option_scores in likelihood modes; in generate mode (no scores) the rows'
    prompts are scored again with ``hooks`` attached."""
    mode = run.config.mode
    if mode != "generate":
        return [row_value(r) for r in rows]
    items = {it.item_id: it for it in run.items}
    queries = [query(run, engine, items[r["item_id"]], r["condition"]) for r in rows]
    asked = [q for q in queries if q is not None]
    values: list[float | None] = []
    for start in range(0, len(asked), engine.batch_size):
        vals = score(engine, mode, asked[start:start + engine.batch_size], hooks)
        values += [float(v) if torch.isfinite(v) else None for v in vals]
    it = iter(values)
    return [None if q is None else next(it) for q in queries]

