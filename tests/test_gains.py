"""Self-correction gains: paired template-cluster intervals and how they are printed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_plots import make_run

from probe.presentation import compare
from probe.presentation.report import write_report
from probe.scoring import bbq
from probe.scoring.gains import describe_gain, paired_gain
from probe.scoring.metrics import compute_metrics, format_table
from probe.scoring.stats import bootstrap_values, cluster_sums, percentile_interval


def bbq_rows(cond: str, n_templates: int = 40, per: int = 4, shift: float = 0.0,
             noise_seed: int = 1) -> list[dict[str, Any]]:
    """Ambiguous BBQ rows; each template has its own chance of a correct ("unknown")
    answer, and each item its own draw, both shared by conditions of the same
    ``noise_seed``, so such conditions are correlated item by item. ``shift`` raises the
    chance in this condition. Wrong answers are biased or anti-biased by item."""
    base = np.random.default_rng(0).uniform(0.05, 0.95, n_templates)
    noise = np.random.default_rng(noise_seed).uniform(0, 1, (n_templates, per))
    rows = []
    for t in range(n_templates):
        for i in range(per):
            correct = noise[t, i] < min(base[t] + shift, 1.0)
            pred = 2 if correct else (0 if (t + i) % 3 else 1)
            rows.append({"benchmark": "bbq", "condition": cond, "category": "Age",
                         "context_condition": "ambig", "label": 2, "pred": pred,
                         "item_id": f"bbq:Age:{t * per + i}",
                         "meta": {"question_index": str(t), "target_index": 0,
                                  "unknown_index": 2}})
    return rows


def test_gain_of_a_condition_with_itself_is_exactly_zero() -> None:
    base = bbq_rows("baseline")
    same = [{**copy.deepcopy(r), "condition": "instruct-1"} for r in base]
    gains = compute_metrics(base + same, n_boot=300)["gains"]["instruct-1"]["bbq"]
    for metric in ("bias_score_ambig", "accuracy_ambig"):
        assert gains[metric]["value"] == 0.0
        assert gains[metric]["ci"] == [0.0, 0.0]
        assert gains[metric]["spans_zero"] is True
        assert gains[metric]["n_items"] == 160 and gains[metric]["n_clusters"] == 40
    assert "disambig" not in str(gains)  # no rows there: no gain claimed


def test_gain_value_is_the_difference_of_the_reported_metrics() -> None:
    rows = bbq_rows("baseline") + bbq_rows("instruct-2", shift=0.2)
    metrics = compute_metrics(rows, n_boot=200)
    cells = {c: metrics["conditions"][c]["bbq"]["overall"]["ambig"]
             for c in ("baseline", "instruct-2")}
    gain = metrics["gains"]["instruct-2"]["bbq"]
    for metric, key in (("bias_score_ambig", "bias_score"), ("accuracy_ambig", "accuracy")):
        want = cells["instruct-2"][key] - cells["baseline"][key]
        assert gain[metric]["value"] == pytest.approx(want, abs=1e-12)
        low, high = gain[metric]["ci"]
        assert low <= gain[metric]["value"] <= high
    assert metrics["gains"]["instruct-2"]["vs"] == "baseline"


def test_paired_interval_equals_a_hand_loop() -> None:
    cond, base = bbq_rows("negate-1", shift=-0.1), bbq_rows("baseline")
    got = paired_gain(cond, base, "accuracy_ambig", n_boot=150, seed=3)
    templates = [str(t) for t in range(40)]
    draws = np.random.default_rng(3).integers(0, 40, size=(150, 40))
    diffs = []
    for draw in draws:
        acc = []
        for rows in (cond, base):
            picked = [r for t in draw for r in rows if r["meta"]["question_index"] == templates[t]]
            acc.append(sum(r["pred"] == r["label"] for r in picked) / len(picked))
        diffs.append(acc[0] - acc[1])
    assert got["ci"] == pytest.approx(list(np.percentile(diffs, [2.5, 97.5])), abs=1e-12)


def test_paired_interval_is_narrower_than_unpaired_for_correlated_conditions() -> None:
    cond, base = bbq_rows("instruct-3", shift=0.1), bbq_rows("baseline")
    paired = paired_gain(cond, base, "accuracy_ambig", n_boot=1000, seed=0)["ci"]
    # Unpaired: each condition's templates drawn independently.
    units = [cluster_sums(np.array([bbq.row_columns(r) for r in rows]),
                          [bbq.cluster_key(r) for r in rows]) for rows in (cond, base)]
    values = [bootstrap_values(u, bbq.accuracy_stat, 1000, seed) for u, seed in
              zip(units, (1, 2), strict=True)]
    unpaired = percentile_interval(values[0] - values[1])
    print(f"paired width {paired[1] - paired[0]:.3f}, unpaired {unpaired[1] - unpaired[0]:.3f}")
    assert paired[1] - paired[0] < 0.5 * (unpaired[1] - unpaired[0])


def test_printed_table_marks_intervals_that_span_zero() -> None:
    rows = (bbq_rows("baseline") + bbq_rows("instruct-1", shift=0.5)
            + bbq_rows("negate-1", noise_seed=2))
    metrics = compute_metrics(rows, n_boot=300)
    gains = metrics["gains"]
    clear, unclear = (gains[c]["bbq"]["accuracy_ambig"] for c in ("instruct-1", "negate-1"))
    assert clear["spans_zero"] is False and unclear["spans_zero"] is True
    table = format_table(metrics).splitlines()
    lines = {c: next(x for x in table if x.startswith(c) and "accuracy, ambiguous" in x)
             for c in ("instruct-1", "negate-1")}
    assert "(not distinguishable from 0)" in lines["negate-1"]
    assert "(not distinguishable from 0)" not in lines["instruct-1"]
    assert describe_gain(unclear) in lines["negate-1"]
    assert f"n={unclear['n_items']}" in lines["negate-1"]


def test_describe_gain_by_hand() -> None:
    spans = {"value": -0.04, "ci": [-0.2, 0.11], "n_items": 56, "n_clusters": 20,
             "spans_zero": True}
    assert describe_gain(spans) == ("-0.040 [-0.200, +0.110] n=56 items, 20 clusters "
                                    "(not distinguishable from 0)")
    clear = {"value": 0.3, "ci": [0.1, 0.5], "n_items": 30, "n_clusters": 12,
             "spans_zero": False}
    assert describe_gain(clear) == "+0.300 [+0.100, +0.500] n=30 items, 12 clusters"
    assert "no interval" in describe_gain({"value": 0.3, "ci": [None, None], "n_items": 2})


def test_describe_gain_warns_where_the_interval_is_weak() -> None:
    """Few clusters, few items, a zero-width interval: said on the line, as in the report;
    float residue never prints as a signed effect."""
    few = {"value": 0.8, "ci": [-1e-17, 2.0], "n_items": 8, "n_clusters": 4,
           "spans_zero": True}
    text = describe_gain(few)
    assert text.startswith("+0.800 [+0.000, +2.000] n=8 items, 4 clusters")
    assert "not distinguishable from 0" in text and "4<10 clusters" in text and "n<10" in text
    flat = {"value": 0.0, "ci": [0.0, 0.0], "n_items": 28, "n_clusters": 14,
            "spans_zero": True}
    assert describe_gain(flat) == ("+0.000 [+0.000, +0.000] n=28 items, 14 clusters "
                                   "(no verdict: zero-width interval)")


def test_winogender_gains_pair_occupations() -> None:
    def wino(cond: str, tilt: float) -> list[dict[str, Any]]:
        rows = []
        for k in range(10):
            for i in range(3):
                p = 0.1 + 0.08 * k + tilt * (i - 1) * 0.01
                rows.append({"benchmark": "winogender", "condition": cond, "pred": "male",
                             "item_id": f"winogender:o{k}.{i}",
                             "option_scores": [0.0, float(np.log(p / (1 - p))), -40.0],
                             "meta": {"occupation": f"o{k}", "bls_pct_female": 10.0 * k,
                                      "bergsma_pct_female": 5.0 * k}})
        return rows

    metrics = compute_metrics(wino("baseline", 0) + wino("match-stats", 3), n_boot=200)
    gain = metrics["gains"]["match-stats"]["winogender"]
    w = {c: metrics["conditions"][c]["winogender"] for c in ("baseline", "match-stats")}
    assert gain["r_bls"]["value"] == pytest.approx(w["match-stats"]["r_bls"]
                                                   - w["baseline"]["r_bls"], abs=1e-9)
    assert gain["p_female"]["value"] == pytest.approx(w["match-stats"]["p_female"]
                                                      - w["baseline"]["p_female"], abs=1e-12)
    assert gain["r_bls"]["n_clusters"] == 10 and gain["r_bls"]["n_items"] == 30


def test_he_she_gains_ignore_a_shift_to_they() -> None:
    """A condition that moves probability to "they" and keeps the she:he odds lowers
    P(female) over he/she/they but leaves P(female|he/she) and its r unchanged; both gains
    equal the difference of metrics.json's values."""
    def wino(cond: str, they: float) -> list[dict[str, Any]]:
        rows = []
        for k in range(10):
            for i in range(3):
                p = 0.1 + 0.08 * k + (i - 1) * 0.01  # P(she | he or she)
                rows.append({"benchmark": "winogender", "condition": cond, "pred": "male",
                             "item_id": f"winogender:o{k}.{i}",
                             "option_scores": [float(np.log(1 - p)), float(np.log(p)), they],
                             "meta": {"occupation": f"o{k}", "bls_pct_female": 10.0 * k,
                                      "bergsma_pct_female": 5.0 * k}})
        return rows

    metrics = compute_metrics(wino("baseline", -40.0) + wino("instruct-1", 0.0), n_boot=200)
    gain = metrics["gains"]["instruct-1"]["winogender"]
    w = {c: metrics["conditions"][c]["winogender"] for c in ("baseline", "instruct-1")}
    assert gain["p_female"]["value"] < -0.1  # half of every row's mass went to "they"
    assert gain["p_female_he_she"]["value"] == pytest.approx(0.0, abs=1e-9)
    assert gain["r_bls_he_she"]["value"] == pytest.approx(0.0, abs=1e-9)
    for key, block in (("p_female_he_she", "p_female"), ("r_bls_he_she", "r_bls")):
        assert gain[key]["value"] == pytest.approx(
            w["instruct-1"]["he_she"][block] - w["baseline"]["he_she"][block], abs=1e-9)
    assert gain["p_female_he_she"]["n_clusters"] == 10


def test_rows_without_a_biased_answer_do_not_move_a_gain() -> None:
    """Rows with no single biased answer are left out of gains as of every BBQ metric."""
    base, cond = bbq_rows("baseline"), bbq_rows("instruct-1", shift=0.2, noise_seed=2)
    extra = [{**r, "item_id": f"{r['item_id']}x", "pred": r["label"],
              "meta": {**r["meta"], "target_index": None}} for r in base[:20]]
    extra_cond = [{**r, "condition": "instruct-1"} for r in extra]
    for metric in ("accuracy_ambig", "bias_score_ambig"):
        plain = paired_gain(cond, base, metric, n_boot=200)
        padded = paired_gain(cond + extra_cond, base + extra, metric, n_boot=200)
        assert padded == plain


def test_compare_and_report_carry_the_paired_intervals(tmp_path: Path) -> None:
    rows = (bbq_rows("baseline") + bbq_rows("instruct-1", shift=0.5)
            + bbq_rows("negate-1", noise_seed=2))
    metrics = compute_metrics(rows, n_boot=300)
    run = make_run(tmp_path / "run", metrics)
    result = compare.compare_runs([run], {"run": 135_000_000})
    by_cond = {r["condition"]: r for r in result["rows"]}
    for cond in ("instruct-1", "negate-1"):
        gain = metrics["gains"][cond]["bbq"]["accuracy_ambig"]
        row = by_cond[cond]
        assert [row["gain_accuracy_ambig_lo"], row["gain_accuracy_ambig_hi"]] == gain["ci"]
        assert row["gain_accuracy_ambig"] == gain["value"]
        assert row["gain_accuracy_ambig_n"] == 160
    lines = {line.split()[4]: line for line in compare.format_compare(result).splitlines()[1:-1]}
    clear = metrics["gains"]["instruct-1"]["bbq"]["accuracy_ambig"]
    assert f"{clear['value']:+.3f} [{clear['ci'][0]:+.3f},{clear['ci'][1]:+.3f}] " in (
        lines["instruct-1"] + " ")
    unclear = metrics["gains"]["negate-1"]["bbq"]["accuracy_ambig"]
    assert f"{unclear['value']:+.3f} [{unclear['ci'][0]:+.3f},{unclear['ci'][1]:+.3f}]~0" in (
        lines["negate-1"])
    page = write_report(run).read_text()
    assert "Self-correction gain over the baseline" in page
    assert "not distinguishable from 0" in page
    assert "differs from 0" in page


def test_table_prints_accuracy_intervals_clusters_and_no_r_from_three_occupations() -> None:
    """The terminal table gives BBQ accuracy its interval and each cell its template count
    k; a Winogender r over fewer than 4 occupations (always +-1 over two) prints as n/a, from
    4 on as a number, with the occupation count."""
    def wino(n_occ: int) -> list[dict[str, Any]]:
        return [{"benchmark": "winogender", "condition": "baseline", "pred": "male",
                 "item_id": f"winogender:o{k}.{i}",
                 "option_scores": [0.0, float(np.log(0.1 + 0.2 * k + 0.01 * i)), -40.0],
                 "meta": {"occupation": f"o{k}", "bls_pct_female": 10.0 * k,
                          "bergsma_pct_female": 5.0 * k}}
                for k in range(n_occ) for i in range(3)]

    three = [x for x in format_table(compute_metrics(wino(3), n_boot=100)).splitlines()
             if x.startswith("baseline")][0].split()
    assert three[1:5] == ["n/a"] * 4 and three[-3] == "3"  # r columns; k occupations
    four = [x for x in format_table(compute_metrics(wino(4), n_boot=100)).splitlines()
            if x.startswith("baseline")][0].split()
    assert four[1].startswith("+") and four[-3] == "4"
    rows = bbq_rows("baseline")
    metrics = compute_metrics(rows, n_boot=100)
    cell = metrics["conditions"]["baseline"]["bbq"]["overall"]["ambig"]
    line = next(x for x in format_table(metrics).splitlines() if x.startswith("baseline"))
    lo, hi = cell["accuracy_ci"]
    assert f"[{100 * lo:.0f}, {100 * hi:.0f}]" in line
    assert f" {cell['n']:>4} {cell['n_clusters']:>3} " in line
