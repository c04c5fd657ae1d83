"""Probe controls: control tasks per template cluster, the permutation null, and the best
layer chosen on held-out folds behave as a reviewer expects on data with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from probe.analysis import probe_controls as pc
from probe.analysis import probes as pr


def clustered(n_groups: int = 16, per: int = 12, d: int = 8, signal: float = 0.0,
              offset: float = 3.0, row_labels: bool = False, seed: int = 0):
    """Rows in template clusters, each with its own offset in activation space.

    Labels are constant per cluster (the hard case: structure a probe can latch onto) unless
    ``row_labels``; ``signal`` plants a label direction w.
    """
    rng = np.random.default_rng(seed)
    gi = np.repeat(np.arange(n_groups), per)
    groups = np.array([f"T{g}" for g in gi])
    y = (rng.permutation(np.arange(len(gi)) % 2) if row_labels
         else rng.permutation(np.arange(n_groups) % 2)[gi])
    w = rng.normal(size=d)
    w /= np.linalg.norm(w)
    X = (rng.normal(size=(len(gi), d)) + offset * rng.normal(size=(n_groups, d))[gi]
         + signal * np.outer(y, w))
    return X, y, groups


def test_control_labels_are_constant_within_clusters_and_keep_the_rate():
    _, y, groups = clustered(n_groups=40, row_labels=True)
    ctrl = pc.control_labels(y, groups, 200, seed=3)
    assert ctrl.shape == (200, len(y))
    for g in np.unique(groups):
        assert (ctrl[:, groups == g] == ctrl[:, groups == g][:, :1]).all()
    assert abs(ctrl.mean() - y.mean()) < 0.03
    assert all(0 < row.sum() < len(y) for row in ctrl)  # both classes in every draw
    assert (ctrl == pc.control_labels(y, groups, 200, seed=3)).all()  # seeded


def test_planted_direction_is_selective_and_significant():
    X, y, groups = clustered(signal=4.0, row_labels=True, offset=1.0)
    for kind in pr.KINDS:
        res = pr.fit_probe(X, y, groups, kind=kind, n_draws=100)
        assert res.control["n_draws"] == 100
        assert res.accuracy > 0.8 and res.selectivity > 0.3
        assert res.p_value == 1 / 101  # above every control draw
        assert abs(res.control_accuracy - 0.5) < 0.1


def test_noise_is_not_significant_and_p_is_spread():
    ps, sel = [], []
    for seed in range(12):
        X, y, groups = clustered(seed=seed)
        res = pr.fit_probe(X, y, groups, kind="diffmeans", seed=seed, n_draws=100)
        ps.append(res.p_value)
        sel.append(res.selectivity)
    assert sum(p < 0.05 for p in ps) <= 2  # 0.6 expected at the 5% level
    assert np.std(ps) > 0.15 and 0.25 < np.mean(ps) < 0.75  # roughly uniform, not piled up
    assert abs(np.mean(sel)) < 0.1


def test_cluster_control_is_wider_than_a_row_shuffle():
    # With labels constant per cluster, outcomes move by whole clusters: a row-level shuffle
    # null is far too narrow, and would call noise significant.
    X, y, groups = clustered(seed=1)
    rng = np.random.default_rng(0)
    rows = np.stack([rng.permutation(y) for _ in range(100)])
    by_row = pr.fit_probe(X, y, groups, kind="diffmeans", controls=rows)
    by_cluster = pr.fit_probe(X, y, groups, kind="diffmeans", n_draws=100)
    assert width(by_cluster) > 2 * width(by_row)
    assert by_cluster.accuracy == by_row.accuracy  # same probe; only the control differs


def width(res: pr.ProbeResult) -> float:
    """Width of the control draws' 5-95% accuracy range."""
    low, high = res.control["accuracy_5_95"]
    return float(high - low)


def _layers(X_by_layer: list[np.ndarray], y: np.ndarray, groups: np.ndarray):
    rows = [{"benchmark": "bbq", "item_id": str(i), "condition": "instruct-1" if y[i] else
             "baseline", "group": groups[i], "pred": None, "label": None}
            for i in range(len(y))]
    best: dict = {}
    records = pr.probe_layers({f"blocks.{i}.hook_resid_post": X for i, X in
                               enumerate(X_by_layer)}, rows, ["condition:instruct-1"],
                              kinds=("diffmeans",), progress=False, best_out=best,
                              n_draws=100)
    return records, best["condition:instruct-1"]["diffmeans"]


def test_nested_best_layer_finds_the_planted_layer():
    X, y, groups = clustered(signal=4.0, row_labels=True, offset=1.0)
    noise = [np.random.default_rng(i).normal(size=X.shape) for i in range(4)]
    records, best = _layers([noise[0], noise[1], X, noise[2]], y, groups)
    assert set(best["layers_chosen"]) == {2} and best["layer"] == 2
    assert best["accuracy"] > 0.9 and best["p_value"] < 0.02
    assert records[2]["diffmeans"]["p_fwer"] < 0.02
    assert all(r["diffmeans"]["p_fwer"] >= r["diffmeans"]["p_value"] for r in records)


def test_nested_best_of_one_layer_is_that_layers_probe_and_control():
    """With one layer the nested choice has nothing to choose: its accuracy, control and p
    equal that layer's own, which scores each control probe against its control labels
    (a control probe scored against the true labels would sit at chance whatever it fits)."""
    X, y, groups = clustered(signal=1.0, row_labels=True, offset=1.0)
    records, best = _layers([X], y, groups)
    layer = records[0]["diffmeans"]
    assert best["accuracy"] == layer["accuracy"]
    assert best["control_accuracy"] == pytest.approx(layer["control_accuracy"], abs=1e-12)
    assert best["p_value"] == pytest.approx(layer["p_value"], abs=1e-12)


def test_nested_best_layer_is_not_optimistic_on_noise():
    # The max over 12 noise layers on the same folds is biased upward; the nested choice
    # scores each fold on templates its choice never saw, so it stays at chance.
    nested, maxed = [], []
    for seed in range(4):
        _, y, groups = clustered(row_labels=True, seed=seed, offset=0.0)
        layers = [np.random.default_rng([seed, i]).normal(size=(len(y), 8)) for i in range(12)]
        records, best = _layers(layers, y, groups)
        nested.append(best["accuracy"])
        maxed.append(max(r["diffmeans"]["accuracy"] for r in records))
    assert np.mean(maxed) > 0.55 and np.mean(maxed) - np.mean(nested) > 0.04
    assert abs(np.mean(nested) - 0.5) < 0.06


def test_n_draws_reaches_the_null_and_bad_values_are_refused(tmp_path, monkeypatch):
    """`probe probes --n-draws N` fits N control draws per layer (and says so in probes.json);
    0 or a negative number is a one-line usage error (exit 2), before anything is written."""
    import json

    import click
    import pytest
    from click.testing import CliRunner

    from probe.analysis import probe_run as prun
    from probe.analysis import targets as tg
    from probe.commands.probes import probes
    from probe.errors import ConfigError
    from tests.test_probes import fake_run

    store = fake_run(tmp_path)
    monkeypatch.setattr(tg, "open_store", lambda run_dir: store)
    group = click.Group()
    group.add_command(probes)
    args = ["probes", str(tmp_path), "--target", "biased_answer", "--kind", "diffmeans"]
    for bad in ("0", "-5", "ten"):
        res = CliRunner().invoke(group, [*args, "--n-draws", bad])
        assert res.exit_code == 2 and "--n-draws" in res.output, res.output
        assert not (tmp_path / "probes.json").exists()
    with pytest.raises(ConfigError, match="--n-draws"):
        prun.run_probes(tmp_path, ["biased_answer"], ("diffmeans",), store=store,
                        progress=False, n_draws=0)
    res = CliRunner().invoke(group, [*args, "--n-draws", "30"])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "probes.json").read_text())
    assert saved["meta"]["n_draws"] == 30
    layers = saved["targets"]["biased_answer"]["layers"]
    assert layers and all(rec["diffmeans"]["control"]["n_draws"] == 30 for rec in layers)
