"""Planted-mechanism validation: patching names the layer where a known mechanism acts, and
finds nothing on the same model without it (docs/validation.md)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from probe.engine.models import LoadedModel

PLANT_AFTER = 1  # the planted vector enters the residual stream after block 1
SCALE = 60.0


def _letters(loaded: LoadedModel) -> list[int]:
    from probe.engine.inference import Engine

    conts = Engine(loaded).pack_batch(["x The answer is ("], [["a", "b", "c"]]).conts[0]
    return [c[0] for c in conts]


def _planted_setup(tmp_path: Path, loaded: LoadedModel, conditions: list[str]
                   ) -> tuple[Any, Any, int]:
    """Ambiguous BBQ Age items written to ``tmp_path``, letter mode, no counterbalancing: the
    run's config, the planted unit direction (letter (c) against (a)/(b)) and the trigger."""
    from probe.config import RunConfig
    from probe.engine.planted import letter_direction
    from tests.conftest_data import bbq_cells, write_jsonl
    from tests.test_patch_study import _register_aligned

    _register_aligned()
    ids = _letters(loaded)
    trigger = loaded.tokenizer(" unbiased", add_special_tokens=False).input_ids
    assert len(trigger) == 1
    data = tmp_path / "data"
    rows = [r for r in bbq_cells("Age", per_cell=6) if r["context_condition"] == "ambig"]
    write_jsonl(data / "bbq" / "Age.jsonl", rows)
    cfg = RunConfig(model="tiny-random", benchmarks=["bbq"], mode="letter",
                    conditions=conditions, counterbalance=False,
                    data_dir=str(data), batch_size=8, max_new_tokens=4)
    return cfg, letter_direction(loaded, ids[2], ids[:2]), trigger[0]


def validation_run(tmp_path: Path, loaded: LoadedModel, planted: bool) -> dict[str, Any]:
    """Ambiguous BBQ items (unbiased answer: (c)), letter mode, a pair of conditions that
    differ in one token; the run and its patching study, with or without the plant."""
    from probe.analysis.patch_study import run_patching
    from probe.engine.planted import plant
    from probe.engine.study import run_study

    cfg, unit, trigger = _planted_setup(tmp_path, loaded, ["test-unbiased", "test-grandson"])
    out = tmp_path / ("planted" if planted else "plain")
    with (plant(loaded, PLANT_AFTER, SCALE * unit, trigger) if planted
          else contextlib.nullcontext()):
        run_study(cfg, out, loaded=loaded)
        result = run_patching(str(out), "test-unbiased", "test-grandson", loaded=loaded)
    picks: dict[str, list[Any]] = {}
    for line in (out / "generations.jsonl").open():
        row = json.loads(line)
        picks.setdefault(row["condition"], []).append(row["pred"])
    result["unbiased_rate"] = {c: sum(p == 2 for p in v) / len(v) for c, v in picks.items()}
    return result


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    from probe.testing import tiny_model

    return tiny_model(n_layers=4, seed=3)


def test_patching_names_the_planted_layer(tmp_path: Path, model: LoadedModel) -> None:
    from probe.presentation.report_where import patching_where, resid_onset

    res = validation_run(tmp_path, model, planted=True)
    assert res["meta"]["alignment"] == "aligned"
    assert res["metric"]["gap"]["reliable"]
    # the plant flips the answer: (c) under the instruction, not under its counterpart
    assert res["unbiased_rate"]["test-unbiased"] == 1.0
    assert res["unbiased_rate"]["test-grandson"] < 0.5
    onset = resid_onset(res, "normalised")
    assert onset is not None and onset["label"] == f"resid_pre {PLANT_AFTER + 1}"
    last = [row[-1]["normalised"]["mean"] for row in res["resid"]["denoise"]]
    noise = [row[-1]["normalised"]["mean"] for row in res["resid"]["noise"]]
    for i, (den, noi) in enumerate(zip(last, noise, strict=True)):
        want = 1.0 if i > PLANT_AFTER else 0.0
        assert abs(den - want) < 0.05 and abs(noi - want) < 0.05, (i, den, noi)
    for check in res["identities"].values():
        assert check["denoise_max_abs_dev"] < 1e-4 and check["noise_max_abs_dev"] < 1e-4
    assert f"resid_pre {PLANT_AFTER + 1}" in patching_where(res)


def test_nothing_is_found_without_the_plant(tmp_path: Path, model: LoadedModel) -> None:
    from probe.presentation.report_where import patching_where

    res = validation_run(tmp_path, model, planted=False)
    assert not res["metric"]["gap"]["reliable"]
    assert "No localisable effect" in patching_where(res)
    assert res["unbiased_rate"]["test-unbiased"] == res["unbiased_rate"]["test-grandson"]


# Directions and steering on the planted model. They read and write
# blocks.L.hook_resid_post; the plant is added on block PLANT_AFTER + 1's input (after
# blocks.{PLANT_AFTER}.hook_resid_post fired), so the first of those hooks that holds it is
# L* = PLANT_AFTER + 1.
L_STAR = PLANT_AFTER + 1
STEER_LAYERS = [PLANT_AFTER, L_STAR]  # the last resid_post without the plant, the first with


def steering_study(tmp_path: Path, loaded: LoadedModel, planted: bool) -> dict[str, Any]:
    """The baseline and the trigger instruction on the same ambiguous items; the direction
    `probe steer` fits on each template half at every layer, its cosine with the planted
    direction, and `probe steer` at STEER_LAYERS (alphas 0, 0.5, 1; 20 random directions)."""
    import numpy as np
    import torch

    from probe.analysis import answers as ans
    from probe.analysis import readout as ro
    from probe.analysis import steer_controls as sc
    from probe.analysis import steering as st
    from probe.engine.inference import Engine
    from probe.engine.planted import plant
    from probe.engine.study import run_study

    cfg, unit, trigger = _planted_setup(tmp_path, loaded, ["baseline", "test-unbiased"])
    out = tmp_path / ("planted" if planted else "plain")
    layers = list(range(loaded.n_layers))
    with (plant(loaded, PLANT_AFTER, SCALE * unit, trigger) if planted
          else contextlib.nullcontext()):
        run_study(cfg, out, loaded=loaded)
        run = ans.load_run(out)
        # the halves `probe steer` fits its directions on (seed 0)
        halves = sc.template_halves([it.group for it in run.items], 0)
        dirs = [st.compute_directions(Engine(loaded, 8), run, "test-unbiased", layers,
                                      {it.item_id for it, h in zip(run.items, halves,
                                                                   strict=True) if h == f})
                for f in (0, 1)]
        steer = st.run_steering(str(out), "test-unbiased", layers=STEER_LAYERS,
                                alphas=[0.0, 0.5, 1.0], n_random=20, loaded=loaded)

    def cos(v: torch.Tensor) -> float:
        return float(torch.nn.functional.cosine_similarity(v.double(), unit.double(), dim=0))

    null = sorted(cos(sc.random_like(unit, k)) for k in range(100))
    instr = [r for (_, c), r in run.rows.items() if c == "test-unbiased"]
    return {"cosines": [[cos(d[L]) for L in layers] for d in dirs],
            "norms": [[float(d[L].norm()) for L in layers] for d in dirs],
            "random_cosine_5_95": [null[5], null[94]], "steer": steer,
            "instruction": {"unbiased_rate": float(np.mean([r["pred"] == 2 for r in instr])),
                            "readout": float(np.mean([ro.row_value(r) for r in instr]))}}


def _record(steer: dict[str, Any], layer: int, alpha: float, kind: str) -> dict[str, Any]:
    return next(r for r in steer["results"]
                if (r["layer"], r["alpha"], r["kind"]) == (layer, alpha, kind))


@pytest.fixture(scope="module")
def planted_steering(tmp_path_factory: pytest.TempPathFactory, model: LoadedModel
                     ) -> dict[str, Any]:
    return steering_study(tmp_path_factory.mktemp("steer"), model, planted=True)


@pytest.fixture(scope="module")
def plain_steering(tmp_path_factory: pytest.TempPathFactory, model: LoadedModel
                   ) -> dict[str, Any]:
    return steering_study(tmp_path_factory.mktemp("steer"), model, planted=False)


def test_the_recovered_direction_is_the_planted_one(planted_steering: dict[str, Any],
                                                    plain_steering: dict[str, Any]) -> None:
    low, high = planted_steering["random_cosine_5_95"]
    for per_layer in planted_steering["cosines"]:  # each template half's direction
        assert all(cos > 0.99 for cos in per_layer[L_STAR:])
        for cos in per_layer[:L_STAR]:  # before the plant: like a random direction
            assert low <= cos <= high
    for per_layer in plain_steering["cosines"]:  # no plant: no layer points along it
        assert all(low <= cos <= high for cos in per_layer)


def test_steering_with_the_recovered_direction_reproduces_the_flip(
        planted_steering: dict[str, Any]) -> None:
    steer = planted_steering["steer"]
    meta, readout = steer["meta"], steer["readout"]
    # alpha 0 is the unsteered run: the same rows and the same readout
    assert meta["alpha0_matches_run"]
    assert readout["alpha0"]["mean"] == pytest.approx(readout["run_stored"]["mean"], abs=1e-6)
    zero = _record(steer, L_STAR, 0.0, "direction")
    assert zero["ambig"]["accuracy"] == 0.0  # nobody answers (c) without the instruction
    # alpha 1 at L*: every held-out item answers (c), as under the plant, and
    # the readout moves to the instruction's
    one = _record(steer, L_STAR, 1.0, "direction")
    plant = planted_steering["instruction"]
    assert plant["unbiased_rate"] == 1.0
    assert one["ambig"]["accuracy"] == plant["unbiased_rate"]
    assert one["readout"]["mean"] == pytest.approx(plant["readout"], abs=0.05)
    rand = _record(steer, L_STAR, 1.0, "random")
    assert rand["verdict"] == "outside the random-direction band"
    assert one["readout"]["mean"] > rand["readout"]["ci"][1] + 0.3
    # A norm-matched random direction swamps the tiny model's residual too and picks the
    # answers itself: (c) for some items under some draws, every item only under the plant's.
    assert one["ambig"]["accuracy"] > rand["ambig"]["accuracy"]
    # the same steering one layer before the plant does nothing
    before = _record(steer, PLANT_AFTER, 1.0, "direction")
    assert before["ambig"]["accuracy"] == 0.0
    assert abs(before["readout"]["mean"] - zero["readout"]["mean"]) < 0.1


def test_steering_finds_nothing_without_the_plant(plain_steering: dict[str, Any]) -> None:
    steer = plain_steering["steer"]
    zero = _record(steer, L_STAR, 0.0, "direction")
    for layer in STEER_LAYERS:
        for alpha in (0.5, 1.0):
            rec = _record(steer, layer, alpha, "direction")
            assert rec["ambig"]["accuracy"] == zero["ambig"]["accuracy"]
            assert abs(rec["readout"]["mean"] - zero["readout"]["mean"]) < 0.1
