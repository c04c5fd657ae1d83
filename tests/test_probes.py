"""Probes: planted directions are found, null data sits at chance, splits respect templates,
and the runner writes probes.json, directions and plots for a fake run."""

from __future__ import annotations

import json

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.numpy import load_file
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from probe.analysis import bootstrap as bs
from probe.analysis import logreg as lr
from probe.analysis import probe_run as prun
from probe.analysis import probes as pr
from probe.analysis import targets as tg
from probe.analysis.probe_plots import plot_probes


def planted(n: int = 400, d: int = 16, n_groups: int = 20, signal: float = 2.0, seed: int = 0):
    """Gaussian noise + label * w, rows spread over templates; returns X, y, groups, unit w.

    w has random signs but equal weight on every feature, so per-feature standardisation
    (which rescales the logreg penalty by each feature's spread) is isotropic.
    """
    rng = np.random.default_rng(seed)
    w = rng.choice([-1.0, 1.0], size=d) / np.sqrt(d)
    y = rng.permutation(np.arange(n) % 2)
    groups = np.array([f"T{i}" for i in rng.integers(0, n_groups, size=n)])
    X = rng.normal(size=(n, d)) + signal * np.outer(y, w)
    return X, y, groups, w


@pytest.mark.parametrize("kind", pr.KINDS)
def test_planted_direction_is_recovered(kind):
    # n >> d: logreg chooses weak regularisation here and is noisier than diffmeans
    X, y, groups, w = planted(n=2000, d=10, signal=3.0)
    res = pr.fit_probe(X, y, groups, kind=kind)
    assert float(res.direction @ w) > 0.99  # sign included: positive points to class 1
    assert abs(np.linalg.norm(res.direction) - 1) < 1e-9
    assert res.accuracy > 0.75 and res.auroc > 0.8
    assert res.accuracy_ci[0] <= res.accuracy <= res.accuracy_ci[1]
    assert res.selectivity > 0.2 and res.n == len(y)


@pytest.mark.parametrize("kind", pr.KINDS)
@pytest.mark.parametrize("seed", [1, 2])
def test_null_data_sits_at_chance(kind, seed):
    X, _, groups, _ = planted(signal=0.0, seed=seed)
    y = np.random.default_rng(seed + 100).permutation(np.arange(len(X)) % 2)
    res = pr.fit_probe(X, y, groups, kind=kind, seed=seed)
    tol = 4 * 0.5 / np.sqrt(len(y))  # 4 sd of a coin-flip accuracy over n test predictions
    assert abs(res.accuracy - 0.5) < tol
    assert abs(res.control_accuracy - 0.5) < tol
    assert abs(res.auroc - 0.5) < tol
    assert abs(res.selectivity) < 2 * tol


def test_shuffled_labels_on_planted_data_lose_the_signal():
    X, y, groups, _ = planted()
    shuffled = np.random.default_rng(5).permutation(y)
    res = pr.fit_probe(X, shuffled, groups, kind="logreg")
    assert abs(res.accuracy - 0.5) < 4 * 0.5 / np.sqrt(len(y))


@pytest.mark.parametrize("seed", range(4))
def test_grouped_splits_never_share_a_template(seed):
    rng = np.random.default_rng(seed)
    groups = np.array([f"T{i}" for i in rng.integers(0, 12, size=150)])
    y = rng.integers(0, 2, size=150)
    splits = pr.grouped_splits(y, groups, 5, seed)
    tested = np.concatenate([test for _, test in splits])
    assert sorted(tested.tolist()) == list(range(150))  # every row tested exactly once
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
        assert len(train) + len(test) == 150


def test_leaky_splitter_trips_the_assertion(monkeypatch):
    class Leaky:
        def __init__(self, **_):
            pass

        def split(self, X, y, groups):
            idx = np.arange(len(y))
            yield idx[: len(y) // 2], idx[len(y) // 2:]  # both halves hold T0 and T1

    monkeypatch.setattr(pr, "StratifiedGroupKFold", Leaky)
    groups = np.array(["T0", "T1"] * 10)
    with pytest.raises(AssertionError, match="template"):
        pr.grouped_splits(np.arange(20) % 2, groups, 2, 0)


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=200)
    scores = np.round(rng.normal(size=200) + y, 1)  # rounding makes ties
    assert bs.auroc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)


def test_newton_logreg_matches_sklearn():
    X, y, _, _ = planted(n=200, d=10, signal=1.0)
    A = np.hstack([X, np.ones((len(X), 1))])
    for C in (0.01, 1.0):
        ours = lr.newton_logreg(A, y, C, tol=1e-12)
        ref = LogisticRegression(C=C, tol=1e-10, max_iter=5000).fit(X, y)
        np.testing.assert_allclose(ours[:-1], ref.coef_[0], rtol=1e-4, atol=1e-5)
        assert ours[-1] == pytest.approx(ref.intercept_[0], abs=1e-4)


def test_row_basis_fit_equals_full_space_fit():
    X, y, _, _ = planted(n=40, d=100, signal=1.0)  # n < d: the reduced path is taken
    for centred in (False, True):
        Xc = X - X.mean(0) if centred else X
        F, _, back = lr.row_basis(Xc, Xc[:0], centred=centred)
        assert F.shape[1] == 40 - centred
        reduced = lr.newton_logreg(np.hstack([F, np.ones((40, 1))]), y, 0.1, tol=1e-12)
        full = lr.newton_logreg(np.hstack([Xc, np.ones((40, 1))]), y, 0.1, tol=1e-12)
        np.testing.assert_allclose(back(reduced[:-1]), full[:-1], atol=1e-4)


def test_cluster_bootstrap_ignores_copies_within_a_template():
    rng = np.random.default_rng(0)
    y, groups = rng.integers(0, 2, size=60), np.repeat(np.arange(20), 3).astype(str)
    scores = rng.normal(size=60) + y
    once = bs.cluster_bootstrap(y, scores, groups, seed=3)
    copied = bs.cluster_bootstrap(np.repeat(y, 4), np.repeat(scores, 4), np.repeat(groups, 4),
                                  seed=3)  # same templates, every row four times
    assert once["accuracy"] == pytest.approx(copied["accuracy"])
    assert once["auroc"] == pytest.approx(copied["auroc"])


# --- Runner on a fake run ------------------------------------------------------------------

HOOKS = ["hook_embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


class FakeStore:
    """Duck type of probe.activations.ActivationStore over arrays in store-row order."""

    def __init__(self, rows: list[dict], arrays: dict[str, np.ndarray]):
        self.rows = [{"row": i, "item_id": r["item_id"], "condition": r["condition"],
                      "positions": [-1]} for i, r in enumerate(rows)]
        self.hook_names = list(arrays)
        self.arrays = arrays

    def load(self, hook_name, rows=None, position=-1):
        data = self.arrays[hook_name] if rows is None else self.arrays[hook_name][rows]
        return torch.tensor(data, dtype=torch.float32)


def fake_run(path, n_items: int = 60, d: int = 12, seed: int = 0) -> FakeStore:
    """generations.jsonl + a store where layer 1 encodes the condition and the biased answer."""
    rng = np.random.default_rng(seed)
    cond_dir, bias_dir = np.eye(d)[0], np.eye(d)[1]
    rows: list[dict] = []
    acts: dict[str, list[np.ndarray]] = {h: [] for h in HOOKS}
    for i in range(n_items):
        for cond in ("baseline", "instruct-1"):
            biased = rng.random() < (0.6 if cond == "baseline" else 0.3)
            rows.append({"benchmark": "bbq", "item_id": f"bbq:Age:{i}", "condition": cond,
                         "pred": 0 if biased else 2, "label": 2, "group": f"T{i % 10}",
                         "category": "Age", "context_condition": "ambig",
                         "question_polarity": "neg", "mode": "likelihood",
                         "meta": {"target_index": 0, "unknown_index": 2}})
            signal = 3 * (cond == "instruct-1") * cond_dir + 3 * biased * bias_dir
            for hook, scale in zip(HOOKS, (0, 0, 1), strict=True):
                acts[hook].append(rng.normal(size=d) + scale * signal)
    (path / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return FakeStore(rows, {h: np.array(a) for h, a in acts.items()})


def test_run_probes_end_to_end(tmp_path):
    store = fake_run(tmp_path)
    result = prun.run_probes(tmp_path, store=store, progress=False)
    on_disk = json.loads((tmp_path / "probes.json").read_text())
    assert on_disk["targets"].keys() == result["targets"].keys()
    cond = on_disk["targets"]["condition:instruct-1"]
    assert cond["skipped"] is None and cond["n"] == 120
    by_layer = {rec["layer"]: rec for rec in cond["layers"]}
    assert set(by_layer) == {-1, 0, 1}
    assert by_layer[1]["logreg"]["accuracy"] > 0.9 and by_layer[1]["diffmeans"]["accuracy"] > 0.9
    assert abs(by_layer[-1]["diffmeans"]["accuracy"] - 0.5) < 4 * 0.5 / np.sqrt(120)
    biased = on_disk["targets"]["biased_answer:baseline"]["layers"][-1]
    assert biased["diffmeans"]["accuracy"] > 0.85
    assert on_disk["targets"]["correct:baseline"]["skipped"] is None  # pred 2 == label 2
    corrected = on_disk["targets"]["self_corrected:instruct-*"]
    assert corrected["n"] > 0 and corrected["rates"]["instruct-1"]["n"] > 0
    assert cond["best"]["logreg"]["layer"] == 1 and cond["best"]["logreg"]["p_value"] < 0.05
    assert by_layer[1]["diffmeans"]["control"]["n_draws"] == on_disk["meta"]["n_draws"] == 100
    vectors = load_file(str(tmp_path / "probe_directions.safetensors"))
    key = "biased_answer:baseline/diffmeans/blocks.1.hook_resid_post"
    assert vectors[key][1] > 0.9  # the planted bias axis
    assert len(vectors) == sum(2 * len(t["layers"]) for t in on_disk["targets"].values())
    png = plot_probes(tmp_path / "probes.json", tmp_path / "plots" / "probes.png")
    assert png.stat().st_size > 10_000


def test_target_adds_to_probes_json(tmp_path):
    """``--target X`` after a default run keeps the earlier targets (and their directions);
    a run under other settings replaces them instead of mixing two protocols."""
    store = fake_run(tmp_path)
    first = prun.run_probes(tmp_path, ["correct:baseline"], ("diffmeans",), store=store,
                          progress=False)
    second = prun.run_probes(tmp_path, ["condition:instruct-1"], ("diffmeans",), store=store,
                           progress=False)
    on_disk = json.loads((tmp_path / "probes.json").read_text())
    assert set(on_disk["targets"]) == {"correct:baseline", "condition:instruct-1"}
    assert on_disk["targets"]["correct:baseline"] == first["targets"]["correct:baseline"]
    assert second["targets"] == on_disk["targets"]
    vectors = load_file(str(tmp_path / "probe_directions.safetensors"))
    assert {k.split("/")[0] for k in vectors} == {"correct:baseline", "condition:instruct-1"}
    other = prun.run_probes(tmp_path, ["condition:instruct-1"], ("diffmeans",), seed=1,
                          store=store, progress=False)
    assert set(other["targets"]) == {"condition:instruct-1"}
    assert other["meta"]["replaced"] == ["condition:instruct-1", "correct:baseline"]


def test_probes_command(tmp_path, monkeypatch):
    from probe.commands.probes import probes

    store = fake_run(tmp_path)
    monkeypatch.setattr(tg, "open_store", lambda run_dir: store)
    group = click.Group()
    group.add_command(probes)
    result = CliRunner().invoke(group, ["probes", str(tmp_path), "--target", "biased_answer",
                                        "--target", "self_corrected:instruct-1", "--target",
                                        "correct:cot", "--kind", "diffmeans"])
    assert result.exit_code == 0, result.output
    assert "biased_answer" in result.output and "diffmeans" in result.output
    assert "correct:cot" in result.output and "skipped: no rows" in result.output
    for name in ("probes.json", "directions.json", "plots/probes.png", "plots/directions.png"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "probes.json").read_text())
    assert set(saved["targets"]) == {"biased_answer", "self_corrected:instruct-1", "correct:cot"}
    assert saved["targets"]["correct:cot"]["layers"] == []


def test_run_probes_reads_a_real_activation_store(tmp_path):
    activations = pytest.importorskip("probe.activations")
    fake = fake_run(tmp_path, n_items=30)
    with activations.ShardWriter(tmp_path / "activations", HOOKS, n_positions=1, d_model=12,
                                 dtype="float32", rows_per_shard=25) as writer:
        acts = {h: torch.tensor(a, dtype=torch.float32)[:, None] for h, a in fake.arrays.items()}
        writer.add([{**meta, "positions": [-1]} for meta in fake.rows], acts)
    result = prun.run_probes(tmp_path, ["condition:instruct-1"], ("diffmeans",), progress=False)
    from_fake = prun.run_probes(tmp_path, ["condition:instruct-1"], ("diffmeans",), store=fake,
                              progress=False)
    assert result["targets"] == from_fake["targets"]  # same numbers through either store


def test_probe_layers_on_arrays_with_target_names():
    X, y, groups, w = planted(n=200, d=8, signal=3.0)
    rows = [{"benchmark": "bbq", "item_id": str(i), "condition": "instruct-1" if y[i] else
             "baseline", "group": groups[i], "pred": None, "label": None} for i in range(200)]
    out: dict[str, np.ndarray] = {}
    records = pr.probe_layers({"hook_embed": X, "blocks.0.hook_resid_post": -X}, rows,
                              ["condition:instruct-1"], kinds=("diffmeans",), progress=False,
                              directions_out=out)
    assert [r["layer"] for r in records] == [-1, 0]
    json.dumps(records)  # JSON-ready
    assert out["condition:instruct-1/diffmeans/hook_embed"] @ w > 0.95
    assert out["condition:instruct-1/diffmeans/blocks.0.hook_resid_post"] @ w < -0.95
