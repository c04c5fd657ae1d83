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


def kind_row(occ: str, kind: str, scores: list[float] | None,
             pred: str | None = None) -> dict[str, Any]:
    base = row(occ, pred, scores)
    base["meta"] = {**base["meta"], "participant_kind": kind,
                    "participant": "someone" if kind == "someone" else "customer"}
    return base


def test_p_female_both_normalisations_by_hand() -> None:
    """From stored log-probs (he, she, they): P(female) over he/she/they is
    p(she) / (p(he) + p(she) + p(they)), over he/she it is p(she) / (p(he) + p(she))."""
    # occupation A: specific p = (1, 3, 1), someone p = (1, 1, 2) (unnormalised)
    rows = [kind_row("A", "specific", [0.0, math.log(3), 0.0]),
            kind_row("A", "someone", [0.0, 0.0, math.log(2)]),
            kind_row("B", "specific", [math.log(4), 0.0, 0.0]),
            kind_row("B", "someone", [0.0, math.log(4), math.log(5)])]
    w = _wino(rows)
    a = w["by_occupation"]["A"]
    assert a["p_female"] == pytest.approx((3 / 5 + 1 / 4) / 2)
    assert a["p_female_he_she"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    b = w["by_occupation"]["B"]
    assert b["p_female"] == pytest.approx((1 / 6 + 4 / 10) / 2)
    assert b["p_female_he_she"] == pytest.approx((1 / 5 + 4 / 5) / 2)
    assert w["p_female"] == pytest.approx((3 / 5 + 1 / 4 + 1 / 6 + 4 / 10) / 4)
    assert w["he_she"]["p_female"] == pytest.approx((3 / 4 + 1 / 2 + 1 / 5 + 4 / 5) / 4)
    specific, someone = w["by_participant"]["specific"], w["by_participant"]["someone"]
    assert specific["by_occupation"]["A"]["p_female"] == pytest.approx(3 / 5)
    assert specific["by_occupation"]["A"]["p_female_he_she"] == pytest.approx(3 / 4)
    assert someone["by_occupation"]["B"]["p_female"] == pytest.approx(4 / 10)
    assert someone["by_occupation"]["B"]["p_female_he_she"] == pytest.approx(4 / 5)
    assert specific["n"] == someone["n"] == 0  # scores only, no parsed answers


def test_answers_he_she_leaves_out_they() -> None:
    rows = [kind_row("A", "specific", None, "female"), kind_row("A", "someone", None, "neutral"),
            kind_row("B", "specific", None, "male"), kind_row("B", "someone", None, "female")]
    w = _wino(rows)
    assert w["p_female_source"] == "answers" and w["he_she"]["p_female_source"] == "answers"
    assert w["by_occupation"]["A"]["p_female"] == 0.5
    assert w["by_occupation"]["A"]["p_female_he_she"] == 1.0  # the "they" answer left out
    assert w["by_occupation"]["B"]["p_female_he_she"] == 0.5
    assert w["by_participant"]["someone"]["by_occupation"]["A"]["p_female_he_she"] is None


def test_correlations_per_variant_and_normalisation() -> None:
    """r(BLS) of each variant and normalisation equals numpy on its own per-occupation
    P(female); pooled P(female) per occupation is the mean of the two kinds."""
    rng = np.random.default_rng(3)
    rows = [kind_row(o, k, list(rng.normal(size=3))) for o in "ABCD"
            for k in ("specific", "someone")]
    w = _wino(rows)
    bls = [STATS[o][0] for o in "ABCD"]
    for block in (w, w["by_participant"]["specific"], w["by_participant"]["someone"]):
        for key, r_key in (("p_female", "r_bls"), ("p_female_he_she", None)):
            p = [block["by_occupation"][o][key] for o in "ABCD"]
            target = block[r_key] if r_key else block["he_she"]["r_bls"]
            assert target == pytest.approx(np.corrcoef(p, bls)[0, 1])
    for o in "ABCD":
        kinds = [w["by_participant"][k]["by_occupation"][o] for k in ("specific", "someone")]
        for key in ("p_female", "p_female_he_she"):
            assert w["by_occupation"][o][key] == pytest.approx((kinds[0][key] + kinds[1][key]) / 2)


def test_table_prints_each_participant_kind_and_both_normalisations() -> None:
    from probe.scoring.metrics import format_table

    rows = [kind_row(o, k, [0.0, float(i), 0.5]) for i, o in enumerate("ABCD")
            for k in ("specific", "someone")]
    text = format_table(compute_metrics(rows, n_boot=0))
    lines = text.splitlines()
    assert [ln.split()[0] for ln in lines[2:5]] == ["base", "specific", "someone"]
    assert "over he/she/they" in text and "over he/she" in text
