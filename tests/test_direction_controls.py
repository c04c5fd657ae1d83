"""Held-out direction cosines: planted alignment is found against its nulls, noise is not,
neither vector sees the other's templates, and Winogender rows stay out of BBQ directions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from probe.analysis import direction_controls as dc
from probe.analysis import directions as dr
from tests.test_directions import HOOKS, FakeStore, fake_run


def bbq_data(along: float, n: int = 200, d: int = 32, n_templates: int = 20, seed: int = 0):
    """Item diffs = along * bias axis + noise; bias rows sit +2 along the axis when biased."""
    rng = np.random.default_rng(seed)
    axis = np.eye(d)[0]
    groups = [f"T{i % n_templates}" for i in range(n)]
    diffs = along * axis + rng.normal(size=(n, d))
    y = rng.integers(0, 2, size=n)
    X_bias = rng.normal(size=(n, d)) + 2 * np.outer(y, axis)
    return diffs, groups, X_bias, y


def test_planted_alignment_is_found_against_both_nulls():
    diffs, groups, X_bias, y = bbq_data(along=-1.0)
    got = dc.heldout_cosines(diffs, groups, X_bias, y, groups)
    assert got is not None and got["cosine"] < -0.5
    assert got["cosine_ci"][1] < got["control"]["shuffled_condition_5_95"][0]
    assert got["control"]["p_value"] == 1 / 201 and got["verdict"].startswith("away")
    assert got["n_pairs"] == 200 and got["n_templates"] == 20 and got["k_folds"] == 5


def test_noise_is_not_distinguishable_from_the_control():
    verdicts = []
    for seed in range(5):
        diffs, groups, X_bias, y = bbq_data(along=0.0, seed=seed)
        verdicts.append(dc.heldout_cosines(diffs, groups, X_bias, y, groups)["verdict"])
    assert verdicts.count("not distinguishable from the control") >= 4


def test_held_out_templates_never_enter_the_bias_fit():
    # poison one fold's own bias rows so that a fit that saw them would align with that
    # fold's shift: its held-out cosine must not move, the other folds' must
    diffs, groups, X_bias, y = bbq_data(along=0.0, seed=3)
    clean = dc.heldout_cosines(diffs, groups, X_bias, y, groups)
    folds = dc.template_folds(groups, 5, 0)
    for f in range(5):
        own = np.array([folds[g] == f for g in groups])
        poisoned = X_bias.copy()
        poisoned[own & (y == 1)] += 50 * diffs[own].mean(0)
        other = dc.heldout_cosines(diffs, groups, poisoned, y, groups)
        assert other["fold_cosines"][f] == clean["fold_cosines"][f]
        assert all(other["fold_cosines"][g] != clean["fold_cosines"][g]
                   for g in range(5) if g != f)
    assert np.mean(clean["fold_cosines"]) == pytest.approx(clean["cosine"])


def test_winogender_rows_stay_out_of_a_bbq_direction(tmp_path):
    store, shifts = fake_run(tmp_path)
    keys = [(r["item_id"], r["condition"]) for r in store.rows]
    arrays = {h: store.arrays[h].copy() for h in HOOKS}
    lines = (tmp_path / "generations.jsonl").read_text().splitlines()
    for j in range(3):  # three Winogender items with a huge instruct-1 shift
        for cond in ("baseline", "instruct-1"):
            lines.append(json.dumps({"benchmark": "winogender", "item_id": f"w{j}",
                                     "condition": cond, "pred": None, "label": None,
                                     "group": "nurse", "meta": {}}))
            keys.append((f"w{j}", cond))
            for h in HOOKS:
                arrays[h] = np.vstack([arrays[h], (100.0 if cond != "baseline" else 0.0)
                                       * np.ones((1, arrays[h].shape[1]))])
    (tmp_path / "generations.jsonl").write_text("\n".join(lines) + "\n")
    entry = dr.compute_directions(tmp_path, "instruct-1", store=FakeStore(keys, arrays))
    assert entry["n_pairs"] == 50
    vec = dr.load_direction(tmp_path, "instruct-1", "blocks.0.hook_resid_post").numpy()
    np.testing.assert_allclose(vec, shifts["instruct-1"], atol=1e-5)
    layer0 = entry["layers"][-1]["heldout"]
    # 5 templates: 32 sign patterns, so p cannot go below ~2/32 (said, not hidden)
    assert layer0["cosine"] < -0.8 and layer0["n_templates"] == 5
    assert layer0["control"]["p_value"] > 0.05 and "not distinguishable" in layer0["verdict"]


def test_report_shows_held_out_cosines_with_their_control(tmp_path):
    from probe.presentation.report_analyses import directions_html

    store, _ = fake_run(tmp_path)
    dr.compute_directions(tmp_path, "instruct-1", store=store)
    html = directions_html(json.loads((tmp_path / "directions.json").read_text()))
    assert "held-out" in html and "shuffled-condition" in html
    assert html.count("not distinguishable from the control") == len(HOOKS)  # 5 templates


def test_direction_verdict_needs_folds_templates_and_an_interval_off_zero() -> None:
    """A small p alone is not enough: the cosine's interval must exclude 0, over at least
    2 scored folds and 5 templates."""
    assert dc._verdict(-0.5, [-0.7, -0.3], 0.01, 4, 12) == "away from the biased answer"
    assert dc._verdict(0.5, [0.3, 0.7], 0.01, 4, 12) == "toward the biased answer"
    assert dc._verdict(0.5, [-0.1, 0.7], 0.01, 4, 12) == "not distinguishable from the control"
    assert dc._verdict(0.5, [0.3, 0.7], 0.2, 4, 12) == "not distinguishable from the control"
    assert dc._verdict(0.5, [0.3, 0.7], 0.01, 1, 12).startswith("no verdict: 1 scored folds")
    assert dc._verdict(0.5, [0.3, 0.7], 0.01, 4, 3).startswith("no verdict")
