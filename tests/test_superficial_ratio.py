"""The superficial ratio, the direction's split-half check and the round trajectories, on
hand-built numbers with known answers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from probe.analysis.superficial.project import Rows
from probe.analysis.superficial.ratio import model_verdict, ratio_block
from probe.analysis.superficial.trajectories import trajectories

N_TEMPLATES, PER_TEMPLATE = 20, 2
HOOK = "blocks.0.hook_resid_post"


def _rows(moved: float, flip: bool, seed: int = 0) -> tuple[Rows, np.ndarray]:
    """Baseline and condition rows of 40 ambiguous items; half the baseline answers are
    stereotyped (projection 1 + noise, others 0 + noise). Under the condition the stereotyped
    answers flip to "unknown" if ``flip`` and their projections move by ``-moved``."""
    rng = np.random.default_rng(seed)
    rows, z = [], []
    n = N_TEMPLATES * PER_TEMPLATE
    stereo = np.arange(n) % 2 == 0
    zb = stereo + 0.05 * rng.normal(size=n)
    for cond in ("baseline", "c"):
        for i in range(n):
            chose = stereo[i] and not (cond == "c" and flip)
            rows.append({"item_id": f"i{i}", "condition": cond, "context_condition": "ambig",
                         "pred": 0 if chose else 2, "meta": {"target_index": 0}})
            z.append(zb[i] - (moved if cond == "c" and stereo[i] else 0.0))
    sel = Rows(np.arange(2 * n), np.zeros(2 * n, dtype=int),
               [f"t{(i % n) // PER_TEMPLATE}" for i in range(2 * n)],
               [r["condition"] for r in rows], [r["item_id"] for r in rows], rows)
    return sel, np.array(z)


def _hand(sel: Rows, z: np.ndarray) -> dict[str, float]:
    n = len(z) // 2
    zb, zc = z[:n], z[n:]
    sb = np.array([r["pred"] == 0 for r in sel.rows[:n]], dtype=float)
    sc = np.array([r["pred"] == 0 for r in sel.rows[n:]], dtype=float)
    sep = zb[sb == 1].mean() - zb[sb == 0].mean()
    beh = sc.mean() - sb.mean()
    internal = (zc - zb).mean() / sep
    return {"beh": beh, "sep": sep, "internal": internal, "ratio": internal / beh}


@pytest.mark.parametrize(("moved", "verdict"), [(1.0, "internal"), (0.0, "superficial"),
                                                 (-1.0, "superficial")])
def test_ratio_matches_a_hand_computation_and_the_known_answer(moved: float,
                                                               verdict: str) -> None:
    sel, z = _rows(moved, flip=True)
    block = ratio_block(z, sel, "c", "ambig", n_boot=500, seed=0, adjusted_level=0.99)
    for key, want in _hand(sel, z).items():
        assert block[key]["value"] == pytest.approx(want, rel=1e-9, abs=1e-12)
        low, high = block[key]["ci"]
        assert low <= block[key]["value"] <= high
    assert block["ratio"]["value"] == pytest.approx(moved / _hand(sel, z)["sep"], rel=1e-9)
    assert block["verdict"] == verdict, block["rule"]
    assert model_verdict({HOOK: block})["verdict"] == verdict
    assert (block["n_pairs"], block["n_clusters"]) == (40, N_TEMPLATES)


def test_no_behavioural_change_gives_no_verdict() -> None:
    sel, z = _rows(moved=1.0, flip=False)
    block = ratio_block(z, sel, "c", "ambig", n_boot=500, seed=0, adjusted_level=0.99)
    assert block["verdict"] == "undetermined"
    assert "no behavioural change" in block["rule"]
    assert model_verdict({HOOK: block})["verdict"] == "undetermined"


def test_a_direction_that_does_not_separate_the_answers_gives_no_verdict() -> None:
    sel, z = _rows(moved=1.0, flip=True)
    n = len(z) // 2
    z[:n] = np.random.default_rng(3).normal(size=n)  # baseline projections unrelated
    block = ratio_block(z, sel, "c", "ambig", n_boot=500, seed=0)
    assert block["verdict"] == "undetermined" and "separate" in block["rule"]


def test_too_few_pairs_give_no_verdict() -> None:
    sel, z = _rows(moved=1.0, flip=True)
    keep = [i for i, item in enumerate(sel.item) if int(item[1:]) < 4]
    small = Rows(sel.index[keep], sel.fold[keep], [sel.cluster[i] for i in keep],
                 [sel.condition[i] for i in keep], [sel.item[i] for i in keep],
                 [sel.rows[i] for i in keep])
    block = ratio_block(z[keep], small, "c", "ambig", n_boot=200, seed=0)
    assert block["verdict"] == "undetermined" and "n=4" in block["rule"]


class RoundCache:
    """An activation cache with two review rounds for condition "review"."""

    positions = [-1]

    def __init__(self, final: torch.Tensor, rounds: list[torch.Tensor]):
        self.final, self.rounds = final, rounds

    def position(self, label: int) -> int:
        return self.positions.index(label)

    def __getitem__(self, hook: str) -> torch.Tensor:
        return self.final[:, None, :]

    def n_rounds(self, condition: str) -> int:  # as probe.store.act_rounds: 1 single-turn
        return 1 + len(self.rounds) if condition == "review" else 1

    def at_round(self, hook: str, round_: int) -> torch.Tensor:
        return self.rounds[round_] if round_ < len(self.rounds) else self.final


class PlainCache(RoundCache):
    """A cache of the final position only (no round accessors), as before rounds existed."""

    n_rounds = None  # type: ignore[assignment]


def _round_run(with_rounds: bool) -> tuple[Any, Rows, dict[str, np.ndarray]]:
    n, d = 24, 4
    rng = np.random.default_rng(1)
    rows = [{"item_id": f"i{i % 12}", "condition": "review" if i >= 12 else "baseline",
             "context_condition": "ambig", "pred": 2, "category": "Age",
             "meta": {"target_index": 0, "unknown_index": 2, "question_index": str(i % 4),
                      "history": [["q", "a"]] if i >= 12 else []}, "label": 2}
            for i in range(n)]
    final = torch.tensor(rng.normal(size=(n, d)), dtype=torch.float32)
    rounds = [torch.tensor(rng.normal(size=(n, d)), dtype=torch.float32) for _ in range(2)]
    for r in rounds:
        r[:12] = float("nan")  # baseline rows have no review rounds
    cache = RoundCache(final, rounds) if with_rounds else PlainCache(final, [])
    sel = Rows(np.arange(n), np.array([i % 2 for i in range(n)]),
               [f"bbq:Age:{i % 4}" for i in range(n)], [r["condition"] for r in rows],
               [r["item_id"] for r in rows], rows)
    vectors = {f"anti/{f}/{HOOK}": rng.normal(size=d) for f in (0, 1)}
    return SimpleNamespace(cache=cache), sel, vectors


def test_cached_rounds_get_their_own_trajectories() -> None:
    from probe.analysis.superficial.concept import unit

    run, sel, vectors = _round_run(with_rounds=True)
    out = trajectories(run, sel, vectors, "anti", [HOOK], n_boot=200)
    units = unit(vectors, "anti", HOOK)
    assert out["rounds"] == {"review": 3} and out["rounds_note"] is None
    for r in (0, 1):
        rec = next(x for x in out["records"] if x["condition"] == "review" and x["round"] == r)
        X = run.cache.at_round(HOOK, r).double().numpy()[12:]
        want = np.mean([X[j] @ units[sel.fold[12 + j]] for j in range(12)])
        assert rec["mean"] == pytest.approx(want, rel=1e-9) and rec["n"] == 12
    assert not [x for x in out["records"]
                if x["condition"] == "baseline" and x["round"] is not None]


def test_runs_without_rounds_say_so() -> None:
    run, sel, vectors = _round_run(with_rounds=False)
    out = trajectories(run, sel, vectors, "anti", [HOOK], n_boot=200)
    assert out["rounds"] == {} and "review" in out["rounds_note"]
    assert {x["round"] for x in out["records"]} == {None}


def test_split_half_check_passes_a_consistent_direction_and_fails_others() -> None:
    from probe.analysis.superficial.reliability import N_DRAWS, split_half

    rng = np.random.default_rng(0)
    v = rng.normal(size=(1, 1, 16))
    noise = [0.3 * rng.normal(size=(6, 1, 16)) for _ in (0, 1)]
    same = split_half([v + noise[0], v + noise[1]], [6, 6])[0]
    assert same["reliable"] and same["split_half_p"] == pytest.approx(1 / (1 + N_DRAWS))
    opposite = split_half([v + noise[0], -v + noise[1]], [6, 6])[0]  # halves disagree
    assert not opposite["reliable"] and opposite["split_half_cosine"] < 0
    zero = split_half([np.zeros((6, 1, 16)), np.zeros((6, 1, 16))], [6, 6])[0]
    assert not zero["reliable"] and zero["split_half_cosine"] == 0


def test_an_unreproducible_direction_carries_no_verdict() -> None:
    from probe.analysis.superficial.shift import alignment

    sel, z = _rows(1.0, flip=True)
    block = ratio_block(z, sel, "c", "ambig", n_boot=200, seed=0, reliable=False)
    assert block["verdict"] == "undetermined" and "not reproducible" in block["rule"]
    # the shift is along dimension 0; the states also vary (equally under both conditions)
    # in 10 others, so random directions with their covariance rarely point along it
    noise = np.random.default_rng(5).normal(size=(len(z) // 2, 10))
    X = np.concatenate([z[:, None], np.concatenate([noise, noise])], axis=1)
    dirs = [np.eye(11)[0]] * 2
    sel.condition = ["baseline" if c == "baseline" else "c" for c in sel.condition]
    assert alignment(X, sel, dirs, ["baseline", "c"], n_boot=100)["c"]["verdict"].startswith(
        "aligned away")
    gated = alignment(X, sel, dirs, ["baseline", "c"], n_boot=100, reliable=False)["c"]
    assert gated["verdict"].startswith("undetermined")
