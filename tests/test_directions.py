"""Self-correction directions: planted shifts are recovered and measured against the bias
direction correctly; run-folder outputs merge and load back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from probe.analysis import directions as dr
from probe.errors import DataError

D = 12
HOOKS = ["hook_embed", "blocks.0.hook_resid_post"]


def unit(i: int) -> np.ndarray:
    return np.eye(D)[i]


def paired(shift: np.ndarray, n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Baseline activations and instruction activations = same item + shift + fresh noise."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, D)) * 2
    return base + shift + 0.3 * rng.normal(size=(n, D)), base


def test_planted_shift_is_recovered():
    shift = 2 * unit(3) - unit(5)
    X_i, X_b = paired(shift)
    vec, stats = dr.shift_stats(X_i, X_b, {})
    cos = vec @ shift / np.linalg.norm(vec) / np.linalg.norm(shift)
    assert cos > 0.99
    assert stats["norm"] == pytest.approx(np.linalg.norm(shift), rel=0.05)
    assert stats["n_pairs"] == 400


@pytest.mark.parametrize(("shift", "cosine"), [
    (-3 * unit(0), -1.0),                # straight away from the biased answer
    (3 * unit(0), 1.0),                  # towards it
    (3 * unit(1), 0.0),                  # orthogonal: something added on top
    (unit(0) + unit(1), 1 / np.sqrt(2)),
])
def test_cosine_and_decomposition_against_bias_direction(shift, cosine):
    X_i, X_b = paired(shift)
    bias = {"diffmeans": 5 * unit(0)}  # not unit length on purpose: it is normalised
    vec, stats = dr.shift_stats(X_i, X_b, bias)
    geo = stats["per_kind"]["diffmeans"]
    assert geo["cosine"] == pytest.approx(cosine, abs=0.03)
    # along^2 + orth^2 = |shift|^2 (Pythagoras, exact whatever the data)
    assert geo["along"] ** 2 + geo["orth_norm"] ** 2 == pytest.approx(stats["norm"] ** 2)
    assert geo["along"] == pytest.approx(vec[0])


def test_items_moving_away_and_gap_units():
    X_i, X_b = paired(-2 * unit(0))
    _, stats = dr.shift_stats(X_i, X_b, {"diffmeans": unit(0)}, gaps={"diffmeans": 2.0})
    geo = stats["per_kind"]["diffmeans"]
    assert geo["frac_items_away"] > 0.95
    assert geo["along_gap_units"] == pytest.approx(-1.0, abs=0.05)


class FakeStore:
    """Duck type of probe.activations.ActivationStore."""

    def __init__(self, keys: list[tuple[str, str]], arrays: dict[str, np.ndarray]):
        self.rows = [{"row": i, "item_id": k[0], "condition": k[1], "positions": [-1]}
                     for i, k in enumerate(keys)]
        self.hook_names = list(arrays)
        self.arrays = arrays

    def load(self, hook_name, rows=None, position=-1):
        data = self.arrays[hook_name] if rows is None else self.arrays[hook_name][rows]
        return torch.tensor(data, dtype=torch.float32)


def fake_run(path, n_items: int = 50, seed: int = 0) -> tuple[FakeStore, dict]:
    """A run where instruct-1 shifts layer 0 by -2 along the bias axis and +1 along axis 2.

    Even items answer with the biased option under every condition and sit +3 along the
    bias axis (unit 0), so the bias direction and the paired shifts are known exactly.
    """
    rng = np.random.default_rng(seed)
    shifts = {"baseline": 0.0 * unit(0), "instruct-1": -2 * unit(0) + unit(2),
              "instruct-2": unit(4)}
    rows, keys = [], []
    acts: dict[str, list[np.ndarray]] = {h: [] for h in HOOKS}
    for i in range(n_items):
        base = rng.normal(size=D)
        for cond, shift in shifts.items():
            biased = i % 2 == 0
            rows.append({"benchmark": "bbq", "item_id": str(i), "condition": cond,
                         "pred": 0 if biased else 2, "label": 2, "group": f"T{i % 5}",
                         "context_condition": "ambig", "meta": {"target_index": 0}})
            keys.append((str(i), cond))
            acts["hook_embed"].append(base + 0.1 * rng.normal(size=D))
            acts["blocks.0.hook_resid_post"].append(0.01 * base + shift + 3 * biased * unit(0))
    (path / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return FakeStore(keys, {h: np.array(a) for h, a in acts.items()}), shifts


def test_compute_directions_writes_and_merges(tmp_path):
    store, shifts = fake_run(tmp_path)
    entry = dr.compute_directions(tmp_path, "instruct-1", store=store)
    dr.compute_directions(tmp_path, "instruct-2", store=store)
    assert entry["n_pairs"] == 50 and entry["bias_skipped"] is None
    layer0 = {rec["hook"]: rec for rec in entry["layers"]}["blocks.0.hook_resid_post"]
    geo = layer0["per_kind"]["diffmeans"]
    # the bias axis is unit(0) (biased rows sit +3 along it), the shift is -2 u0 + u2
    assert geo["cosine"] == pytest.approx(-2 / np.sqrt(5), abs=0.01)
    assert geo["orth_norm"] == pytest.approx(1.0, abs=0.01)
    assert geo["along_gap_units"] == pytest.approx(-2 / 3, abs=0.01)
    assert geo["frac_items_away"] == 1.0
    saved = json.loads((tmp_path / "directions.json").read_text())
    assert set(saved["pairs"]) == {"instruct-1-baseline", "instruct-2-baseline"}
    vec = dr.load_direction(tmp_path, "instruct-1", "blocks.0.hook_resid_post")
    assert isinstance(vec, torch.Tensor) and vec.shape == (D,)
    np.testing.assert_allclose(vec.numpy(), shifts["instruct-1"], atol=1e-5)
    assert dr.load_direction(tmp_path, "instruct-2", "hook_embed").norm() < 0.2
    png = dr.plot_cosines(tmp_path / "directions.json", tmp_path / "plots" / "directions.png")
    assert png.stat().st_size > 10_000


def test_errors_name_the_problem(tmp_path):
    store, _ = fake_run(tmp_path, n_items=4)
    with pytest.raises(DataError, match="no directions"):
        dr.load_direction(tmp_path, "instruct-1", "hook_embed")
    with pytest.raises(DataError, match="both"):
        dr.compute_directions(tmp_path, "negate-1", store=store)
    dr.compute_directions(tmp_path, "instruct-1", store=store)
    with pytest.raises(DataError, match="no direction"):
        dr.load_direction(tmp_path, "instruct-1", "blocks.9.hook_resid_post")
