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


def validation_run(tmp_path: Path, loaded: LoadedModel, planted: bool) -> dict[str, Any]:
    """Ambiguous BBQ items (unbiased answer: (c)), letter mode, a pair of conditions that
    differ in one token; the run and its patching study, with or without the plant."""
    from probe.analysis.patch_study import run_patching
    from probe.config import RunConfig
    from probe.engine.planted import letter_direction, plant
    from probe.engine.study import run_study
    from tests.conftest_data import bbq_cells, write_jsonl
    from tests.test_patch_study import _register_aligned

    _register_aligned()
    ids = _letters(loaded)
    trigger = loaded.tokenizer(" unbiased", add_special_tokens=False).input_ids
    assert len(trigger) == 1
    vec = SCALE * letter_direction(loaded, ids[2], ids[:2])
    data = tmp_path / "data"
    rows = [r for r in bbq_cells("Age", per_cell=6) if r["context_condition"] == "ambig"]
    write_jsonl(data / "bbq" / "Age.jsonl", rows)
    cfg = RunConfig(model="tiny-random", benchmarks=["bbq"], mode="letter",
                    conditions=["test-unbiased", "test-grandson"], counterbalance=False,
                    data_dir=str(data), batch_size=8, max_new_tokens=4)
    out = tmp_path / ("planted" if planted else "plain")
    with (plant(loaded, PLANT_AFTER, vec, trigger[0]) if planted
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
