"""Option-order counterbalancing: a pure position habit cancels, a content preference
survives every order, batched equals unbatched, and the habit is reported before
un-permuting."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from probe.conditions.counterbalance import aggregate, cyclic_orders, shown
from probe.conditions.registry import LETTERS
from probe.config import RunConfig
from probe.data.bbq import load_bbq
from probe.engine.pipeline import Unit, run_batch
from probe.errors import ConfigError
from probe.scoring.bbq import answer_positions
from probe.testing import tiny_tokenizer


def _softmax(xs: list[float]) -> list[float]:
    top = max(xs)
    exps = [math.exp(x - top) for x in xs]
    return [e / sum(exps) for e in exps]


class FakeEngine:
    """Scores option letters from the prompt: ``prefer(displayed options, text) -> scores``."""

    def __init__(self, prefer):
        self.tokenizer = tiny_tokenizer()
        self.loaded = SimpleNamespace(chat=True, n_ctx=10**6)
        self.prefer = prefer
        self.calls: list[int] = []

    def n_tokens(self, text: str) -> int:
        return len(text.split())

    def option_logprobs_batch(self, texts, options, capture=None):
        self.calls.append(len(texts))
        return [self.prefer(self._displayed(t), t) for t in texts]

    def _displayed(self, text: str) -> list[str]:
        """The option texts in the order the prompt shows them."""
        body = text.rsplit("(a) ", 1)[1]
        first, rest = body.split(" (b) ", 1)
        second, rest = rest.split(" (c) ", 1)
        return [first, second, rest.split(".<|im_end|>", 1)[0]]


def _units(data_dir, n: int = 12) -> list[Unit]:
    items, _ = load_bbq(data_dir, ["Age"], limit=n)
    return [Unit(it, "baseline") for it in items]


def _cfg(counterbalance: bool | None = None) -> RunConfig:
    return RunConfig(mode="letter", counterbalance=counterbalance).validate()


def test_cyclic_orders_show_every_option_once_at_every_position():
    orders = cyclic_orders(3)
    assert sorted(orders) == [(0, 1, 2), (1, 2, 0), (2, 0, 1)]
    for pos in range(3):
        assert sorted(o[pos] for o in orders) == [0, 1, 2]


def test_shown_item_keeps_label_and_answer_indices_on_their_options(data_dir):
    item = _units(data_dir, 2)[0].item
    for order in cyclic_orders(3):
        view = shown(item, order)
        assert view.options[view.label] == item.options[item.label]
        assert view.options[view.meta["unknown_index"]] == item.options[item.meta["unknown_index"]]


def test_position_habit_cancels_to_one_third_each(data_dir):
    """A scorer that always prefers displayed (a) gives each original option 1/3."""
    units = _units(data_dir)
    engine = FakeEngine(lambda displayed, text: [0.0, -2.0, -2.0])
    rows, _ = run_batch(engine, units, _cfg(), None)
    for row in rows:
        assert _softmax(row.option_scores) == pytest.approx([1 / 3] * 3)
        assert row.meta["counterbalance"]["picks"] == [0, 0, 0]
    # Ties are broken by item, not by position: the answers are not all (a).
    assert len({row.pred for row in rows}) > 1
    habit = answer_positions([row.to_json() for row in rows])
    assert habit["0"] == 1.0 and habit["n"] == 3 * len(rows) and habit["counterbalanced"]
    # Without counterbalancing the same scorer answers (a) every time.
    plain, _ = run_batch(engine, units, _cfg(False), None)
    assert {row.pred for row in plain} == {0}


def test_content_preference_gives_the_same_answer_under_every_order(data_dir):
    units = _units(data_dir)

    def prefer(displayed, text):  # knows this item's right answer, wherever it is shown
        item = next(u.item for u in units if f"{u.item.context} {u.item.question}" in text
                    and set(u.item.options) == set(displayed))
        return [0.0 if o == item.options[item.label] else -3.0 for o in displayed]

    rows, _ = run_batch(FakeEngine(prefer), units, _cfg(), None)
    for row in rows:
        cb = row.meta["counterbalance"]
        chosen = [order[pick] for order, pick in zip(cb["orders"], cb["picks"], strict=True)]
        assert len(set(chosen)) == 1 and chosen[0] == row.pred == row.label
        assert len(set(cb["picks"])) == 3  # the displayed position moved with the option
        assert row.output == LETTERS[row.pred]


def test_each_pass_is_no_larger_than_the_batch(data_dir):
    units = _units(data_dir, 4)
    engine = FakeEngine(lambda displayed, text: [0.0, -1.0, -2.0])
    run_batch(engine, units, _cfg(), None)
    assert engine.calls == [len(units)] * 3


def test_batched_equals_unbatched(data_dir, tiny, one_thread):
    from probe.engine.inference import Engine

    units = _units(data_dir, 4)
    cfg = _cfg()
    engine = Engine(tiny, batch_size=8)
    together, _ = run_batch(engine, units, cfg, None)
    alone = [run_batch(engine, [u], cfg, None)[0][0] for u in units]
    for a, b in zip(together, alone, strict=True):
        assert a.pred == b.pred and a.prompt == b.prompt
        assert a.option_scores == pytest.approx(b.option_scores, abs=1e-5)
        assert a.meta["counterbalance"]["picks"] == b.meta["counterbalance"]["picks"]


def test_config_defaults_and_refusals():
    assert RunConfig(mode="letter").validate().counterbalance is True
    assert RunConfig(mode="text").validate().counterbalance is False
    assert RunConfig(mode="text", counterbalance=True).validate().counterbalance is True
    with pytest.raises(ConfigError, match="--counterbalance"):
        RunConfig(mode="generate", counterbalance=True).validate()


def test_aggregate_matches_a_hand_computation():
    orders = cyclic_orders(3)
    views = [[-0.1, -2.0, -3.0], [-1.0, -0.5, -2.5], [-2.0, -1.5, -0.2]]
    agg = aggregate("x", orders, views)
    expect = [0.0, 0.0, 0.0]
    for order, scores in zip(orders, views, strict=True):
        lse = math.log(sum(math.exp(s) for s in scores))
        for pos, s in enumerate(scores):
            expect[order[pos]] += (s - lse) / 3
    assert agg.option_scores == pytest.approx(expect)
    assert agg.pred == max(range(3), key=lambda i: expect[i]) and agg.picks == [0, 1, 2]
