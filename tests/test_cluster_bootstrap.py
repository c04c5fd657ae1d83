"""The template-cluster bootstrap: a hand computation, its identities, a planted design,
and the row-vs-cluster contrast on UnifiedQA's published BBQ predictions."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from probe.scoring import bbq, winogender
from probe.scoring.external import read_predictions
from probe.scoring.metrics import compute_metrics
from probe.scoring.stats import bootstrap_ci, cluster_sums
from tests.conftest_data import shared_data_dir


def _mean(sums: np.ndarray) -> np.ndarray:
    return sums[:, 1] / sums[:, 0]


def _design(n_clusters: int, per: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """[1, correct] rows; each cluster has its own success rate, so rows within a cluster
    are correlated, as rows of one BBQ template are."""
    rng = np.random.default_rng(seed)
    rates = rng.uniform(0, 1, n_clusters)
    keys = [c for c in range(n_clusters) for _ in range(per)]
    correct = (rng.uniform(0, 1, len(keys)) < rates[keys]).astype(float)
    return np.stack([np.ones(len(keys)), correct], axis=1), keys


def test_vectorised_cluster_bootstrap_equals_a_hand_loop() -> None:
    columns, keys = _design(n_clusters=7, per=5, seed=1)
    # Clusters of unequal size, keys not in sorted order.
    columns, keys = columns[3:], [f"t{k * 3 % 7}" for k in keys[3:]]
    n_boot, seed = 200, 4
    got = bootstrap_ci(columns, _mean, n_boot, seed, clusters=keys)
    order = list(dict.fromkeys(keys))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(order), size=(n_boot, len(order)))
    values = []
    for draw in draws:  # plain loops: every row of every drawn cluster, once per draw
        n = correct = 0.0
        for c in draw:
            for row, key in zip(columns, keys, strict=True):
                if key == order[c]:
                    n, correct = n + row[0], correct + row[1]
        values.append(correct / n)
    assert got == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])), abs=1e-12)


def test_singleton_clusters_are_the_row_bootstrap() -> None:
    columns, _ = _design(n_clusters=30, per=3, seed=2)
    rows = bootstrap_ci(columns, _mean, 500, 9)
    assert bootstrap_ci(columns, _mean, 500, 9, clusters=list(range(len(columns)))) == rows


def test_identical_rows_within_a_cluster_give_the_cluster_level_interval() -> None:
    one, _ = _design(n_clusters=40, per=1, seed=3)
    copies = np.repeat(one, 9, axis=0)
    keys = [c for c in range(40) for _ in range(9)]
    cluster = bootstrap_ci(copies, _mean, 1000, 5, clusters=keys)
    assert cluster == pytest.approx(bootstrap_ci(one, _mean, 1000, 5), abs=1e-12)
    row = bootstrap_ci(copies, _mean, 1000, 5)
    # Nine copies make the row bootstrap ~sqrt(9) = 3 times too narrow.
    assert (cluster[1] - cluster[0]) > 2 * (row[1] - row[0])


def _bbq_rows(per_template: int) -> list[dict[str, Any]]:
    """Ambiguous rows of 30 templates, each answered one way throughout (copies)."""
    rng = random.Random(0)
    rows = []
    for template in range(30):
        pred = rng.choice([0, 1, 2])
        for copy in range(per_template):
            rows.append({"benchmark": "bbq", "condition": "baseline", "category": "Age",
                         "context_condition": "ambig", "label": 2, "pred": pred,
                         "item_id": f"bbq:Age:{template}.{copy}",
                         "meta": {"question_index": str(template), "target_index": 0,
                                  "unknown_index": 2}})
    return rows


def test_bbq_cells_resample_templates() -> None:
    """Copying every row of a template leaves a cell's interval as it was: the template,
    not the row, is the unit. (The row bootstrap narrowed it about sqrt(6) times.)"""
    once = compute_metrics(_bbq_rows(1), n_boot=400)
    six = compute_metrics(_bbq_rows(6), n_boot=400)
    cells = [m["conditions"]["baseline"]["bbq"]["overall"]["ambig"] for m in (once, six)]
    assert cells[0]["n_clusters"] == cells[1]["n_clusters"] == 30
    assert cells[1]["n"] == 180
    for key in ("bias_score", "accuracy"):
        assert cells[1][key] == pytest.approx(cells[0][key])
        assert cells[1][f"{key}_ci"] == pytest.approx(cells[0][f"{key}_ci"], abs=1e-12)
    assert six["interval"]["resample"] == "template cluster"


def _wino_rows(copies: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    rows = []
    for k in range(12):
        bls = float(rng.uniform(0, 100))
        p = np.clip(bls / 100 + rng.normal(0, 0.2), 0.01, 0.99)
        for i in range(copies):
            rows.append({"benchmark": "winogender", "condition": "baseline",
                         "item_id": f"winogender:occ{k}.{i}", "pred": "female",
                         "option_scores": [0.0, float(np.log(p / (1 - p))), -50.0],
                         "meta": {"occupation": f"occ{k}", "bls_pct_female": bls,
                                  "bergsma_pct_female": bls}})
    return rows


def test_winogender_resamples_occupations() -> None:
    rows = _wino_rows(1)
    w = compute_metrics(rows, n_boot=300, seed=2)["conditions"]["baseline"]["winogender"]
    # Hand computation: draw occupations, np.corrcoef of the drawn points.
    x = [w["by_occupation"][f"occ{k}"]["p_female"] for k in range(12)]
    y = [w["by_occupation"][f"occ{k}"]["bls_pct_female"] for k in range(12)]
    draws = np.random.default_rng(2).integers(0, 12, size=(300, 12))
    values = [np.corrcoef([x[i] for i in d], [y[i] for i in d])[0, 1] for d in draws]
    assert w["r_bls_ci"] == pytest.approx(list(np.percentile(values, [2.5, 97.5])), abs=1e-9)
    assert w["n_clusters"] == 12
    copied = compute_metrics(_wino_rows(6), n_boot=300, seed=2)["conditions"]["baseline"]
    for key in ("r_bls_ci", "p_female_ci"):
        assert copied["winogender"][key] == pytest.approx(w[key], abs=1e-9)


def test_unifiedqa_age_ambiguous_row_vs_template_width() -> None:
    """On UnifiedQA's published Age predictions, resampling rows makes the ambiguous
    interval several times too narrow and the disambiguated one too wide."""
    path = shared_data_dir() / "bbq-unifiedqa" / "preds_Age.jsonl"
    if not path.is_file():
        pytest.skip(f"no UnifiedQA predictions at {path}")
    rows = read_predictions([path], "unifiedqa-t5-11b_pred_race")
    widths = {}
    for ctx in ("ambig", "disambig"):
        cell = [r for r in rows if r["context_condition"] == ctx]
        columns = np.array([bbq.row_columns(r) for r in cell])
        keys = [bbq.cluster_key(r) for r in cell]
        assert len(set(keys)) == 25  # Age has 25 templates
        stat = bbq.bias_stat(ctx)
        row_lo, row_hi = bootstrap_ci(columns, stat, 1000, 0)
        cl_lo, cl_hi = bootstrap_ci(cluster_sums(columns, keys), stat, 1000, 0)
        widths[ctx] = (row_hi - row_lo, cl_hi - cl_lo)
        print(f"Age {ctx}: row bootstrap width {row_hi - row_lo:.3f}, "
              f"template cluster width {cl_hi - cl_lo:.3f}")
    assert widths["ambig"][1] > 3 * widths["ambig"][0]
    assert widths["disambig"][1] < widths["disambig"][0]


def test_winogender_cluster_key_is_the_occupation() -> None:
    assert winogender.cluster_key({"meta": {"occupation": "nurse"}}) == "nurse"
    assert bbq.cluster_key({"category": "Age", "meta": {"question_index": "3"}}) == "bbq:Age:3"


def test_analysis_intervals_resample_clusters_not_copies() -> None:
    """ans.mean_ci (patching, steering, lens): singleton clusters are the item bootstrap
    exactly; copies of an item inside its own cluster leave the clustered interval unchanged
    (one template is one unit of evidence) while the item bootstrap narrows about sqrt(k)."""
    from probe.analysis import answers as ans

    vals = np.random.default_rng(3).normal(0.2, 1.0, 12)
    plain = ans.mean_ci(vals)
    assert ans.mean_ci(vals, clusters=list(range(12))) == plain
    assert plain["n_clusters"] == 12
    copies = np.repeat(vals, 4)
    keys = np.repeat(np.arange(12), 4).tolist()
    clustered = ans.mean_ci(copies, clusters=keys)
    assert clustered["ci"] == pytest.approx(plain["ci"], abs=1e-12)
    assert (clustered["n"], clustered["n_clusters"]) == (48, 12)
    naive = ans.mean_ci(copies)
    width = (plain["ci"][1] - plain["ci"][0]) / (naive["ci"][1] - naive["ci"][0])
    assert 1.6 < width < 2.5


def test_patching_gap_needs_five_templates() -> None:
    """A large gap over 12 items of 2 templates carries no normalised ratio; the same items
    in 6 templates do. The control verdict applies the same floor."""
    from probe.analysis.patch_control import NOT_DISTINGUISHABLE, control_verdict
    from probe.analysis.patch_study import gap_summary

    src = np.linspace(1.0, 1.5, 12)
    two = gap_summary(src, src - 2.0, clusters=[k % 2 for k in range(12)])
    assert not two["reliable"] and "2 templates" in two["note"]
    assert gap_summary(src, src - 2.0, clusters=[k % 6 for k in range(12)])["reliable"]
    diff = {"mean": 2.0, "ci": [1.5, 2.5], "n": 12, "n_clusters": 2}
    verdict, note = control_verdict(diff, 12)
    assert verdict == NOT_DISTINGUISHABLE and "2 templates" in note
    assert control_verdict({**diff, "n_clusters": 6}, 12)[0].startswith("differs")
