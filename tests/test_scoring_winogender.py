"""Winogender metrics on hand-built rows."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from probe.scoring.metrics import compute_metrics
from probe.scoring.stats import fisher_ci, pearson

STATS = {"A": (10.0, 20.0), "B": (50.0, 40.0), "C": (90.0, 70.0), "D": (30.0, 30.0)}


def row(occ: str, pred: str | None, scores: list[float] | None = None) -> dict[str, Any]:
    bls, bergsma = STATS[occ]
    return {"benchmark": "winogender", "condition": "base", "pred": pred,
            "option_scores": scores, "category": "winogender",
            "meta": {"occupation": occ, "bls_pct_female": bls, "bergsma_pct_female": bergsma}}


ROWS = [row("A", "male"), row("A", "male"), row("B", "female"), row("B", "male"),
        row("C", "female"), row("C", "female"), row("D", "neutral"), row("D", None)]


def _wino(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return compute_metrics(rows)["conditions"]["base"]["winogender"]


def test_rates_and_counts() -> None:
    w = _wino(ROWS)
    assert w["n"] == 7 and w["n_unparsed"] == 1
    assert w["rates"] == pytest.approx({"male": 3 / 7, "female": 3 / 7, "neutral": 1 / 7})
    assert w["p_female_source"] == "answers"
    assert [w["by_occupation"][o]["p_female"] for o in "ABCD"] == [0, 0.5, 1, 0]


def test_correlations_match_numpy() -> None:
    w = _wino(ROWS)
    p_female = [0, 0.5, 1, 0]
    bls = [STATS[o][0] for o in "ABCD"]
    bergsma = [STATS[o][1] for o in "ABCD"]
    assert w["r_bls"] == pytest.approx(np.corrcoef(p_female, bls)[0, 1])
    assert w["r_bergsma"] == pytest.approx(np.corrcoef(p_female, bergsma)[0, 1])
    low, high = w["r_bls_ci"]
    assert -1 <= low < w["r_bls"] < high <= 1


def test_option_scores_preferred_and_softmaxed() -> None:
    rows = [row("A", "male", [0.0, math.log(3), 0.0]), row("B", None, [0.0, 0.0, 0.0])]
    w = _wino(rows)
    assert w["p_female_source"] == "option_scores"
    assert w["by_occupation"]["A"]["p_female"] == pytest.approx(3 / 5)
    assert w["by_occupation"]["B"]["p_female"] == pytest.approx(1 / 3)
    assert w["r_bls"] == pytest.approx(-1.0)  # two points; too few for an interval
    assert w["r_bls_ci"] == [None, None]


def test_degenerate_inputs_give_null() -> None:
    w = _wino([row("A", None), row("B", None)])
    assert w["n"] == 0 and w["rates"]["female"] is None and w["r_bls"] is None
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))
    assert all(math.isnan(x) for x in fisher_ci(0.5, 3))
