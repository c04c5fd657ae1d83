"""Self-correction rates: the answer became "unknown", each item once, against the placebo
on the same items with a paired template-clustered interval."""

from __future__ import annotations

import numpy as np

from probe.analysis import self_correction as sc


def row(item: int, cond: str, pred: int | None, group: str) -> dict:
    return {"benchmark": "bbq", "item_id": str(item), "condition": cond, "pred": pred,
            "label": 2, "group": group, "context_condition": "ambig",
            "meta": {"target_index": 0, "unknown_index": 2}}


def study(p_instruct: float, p_placebo: float, n: int = 240, seed: int = 0) -> list[dict]:
    """Items biased at baseline (a few already 'unknown'); each condition turns an item's
    answer to 'unknown' with its probability, templates of 6 items."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        g = f"T{i // 6}"
        rows.append(row(i, "baseline", 2 if i % 10 == 0 else 0, g))
        rows.append(row(i, "instruct-1", 2 if rng.random() < p_instruct else 1, g))
        rows.append(row(i, "placebo-1", 2 if rng.random() < p_placebo else 0, g))
    return rows


def test_rate_matches_a_hand_count_and_excludes_unknown_at_baseline():
    rows = study(0.5, 0.5)
    got = sc.self_correction_rates(rows, "instruct-*", n_boot=200)["instruct-1"]
    eligible = {r["item_id"] for r in rows if r["condition"] == "baseline" and r["pred"] != 2}
    hits = [r["pred"] == 2 for r in rows if r["condition"] == "instruct-1"
            and r["item_id"] in eligible]
    assert got["n"] == len(eligible) == 216 and got["rate"] == np.mean(hits)
    assert got["rate_ci"][0] < got["rate"] < got["rate_ci"][1]
    assert got["placebo"] == "placebo-1" and got["n_paired"] == 216
    assert abs(got["difference"] - (got["rate_paired"] - got["placebo_rate"])) < 1e-12


def test_placebo_comparison_separates_real_from_hedging():
    same = sc.self_correction_rates(study(0.4, 0.4, seed=1), "instruct-1", n_boot=500)
    assert same["instruct-1"]["verdict"] == "not distinguishable from the placebo"
    lo, hi = same["instruct-1"]["difference_ci"]
    assert lo < 0 < hi
    real = sc.self_correction_rates(study(0.6, 0.1, seed=2), "instruct-1", n_boot=500)
    assert real["instruct-1"]["verdict"] == "above the placebo"
    assert real["instruct-1"]["difference_ci"][0] > 0.3


def test_interval_resamples_templates_not_rows():
    # every item of a template answers alike: the clustered interval must be wider than
    # one that treats the 216 items as independent
    rows = study(0.5, 0.5, seed=3)
    for r in rows:
        if r["condition"] == "instruct-1":
            r["pred"] = 2 if int(r["group"][1:]) % 2 else 1
    got = sc.self_correction_rates(rows, "instruct-1", n_boot=500)["instruct-1"]
    p, n = got["rate"], got["n"]
    naive = 2 * 1.96 * np.sqrt(p * (1 - p) / n)
    assert got["rate_ci"][1] - got["rate_ci"][0] > 1.5 * naive


def test_missing_placebo_is_said_not_invented():
    rows = [r for r in study(0.5, 0.5) if r["condition"] != "placebo-1"]
    got = sc.self_correction_rates(rows, "instruct-1", n_boot=100)["instruct-1"]
    assert got["difference"] is None and "no placebo-1 rows" in got["verdict"]
    assert sc.placebo_of("negate-3") == "placebo-3" and sc.placebo_of("cot") is None


def test_no_verdict_from_one_template_or_a_point_interval():
    """All items in one template: every resample is that template, so the interval is a
    point and says nothing; the verdict says so instead of "above the placebo". The
    placebo's rate carries its own interval."""
    rows = study(0.6, 0.1, n=40, seed=4)
    for r in rows:
        r["group"] = "T0"
    got = sc.self_correction_rates(rows, "instruct-1", n_boot=200)["instruct-1"]
    assert got["difference"] > 0.3 and got["n_paired_templates"] == 1
    assert got["verdict"] == "no verdict: one cluster, zero-width interval"
    # six templates: a verdict, with the small-sample warnings as a note
    six = sc.self_correction_rates(study(0.6, 0.1, n=36, seed=4), "instruct-1",
                                   n_boot=200)["instruct-1"]
    assert six["verdict"] == "above the placebo" and "6<10 clusters" in six["note"]
    lo, hi = six["placebo_rate_ci"]
    assert lo <= six["placebo_rate"] <= hi
    assert sc.placebo_verdict(0.2, (0.2, 0.2), 30, 12)[0] == "no verdict: zero-width interval"
    assert sc.placebo_verdict(0.2, (float("nan"), float("nan")), 30, 12)[0] == (
        "no verdict: no interval")
