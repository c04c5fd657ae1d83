"""The patching study end to end: aligned and unaligned runs, the readout it reports, and
its placebo control."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from probe.analysis import readout as ro
from probe.engine.models import LoadedModel
from tests.test_patching import make_run, sharp_model


def _register_aligned() -> None:
    """Two test conditions whose instructions differ in one single-token word."""
    from probe.conditions.registry import (
        Condition,
        PromptPlan,
        Turn,
        question_text,
        register_condition,
    )

    for name, word in (("test-unbiased", "unbiased"), ("test-grandson", "grandson")):
        register_condition(Condition(
            name, "test", "test", ("bbq",),
            lambda item, w=word: PromptPlan((Turn(question_text(item)
                                                  + f"\nPlease ensure that your answer is {w}."),
                                             ))))


@pytest.mark.parametrize("mode", ["text", "letter"])
def test_patch_command_on_an_aligned_run(tmp_path: Path, mode: str) -> None:
    from probe.commands.analysis import patch

    _register_aligned()
    run = make_run(tmp_path, sharp_model(), mode=mode,
                   conditions=("test-unbiased", "test-grandson"))
    group = click.Group()
    group.add_command(patch)
    with patch_model(sharp_model()):
        res = CliRunner().invoke(group, ["patch", str(run), "--instruction", "test-unbiased",
                                         "--baseline", "test-grandson"])
    assert res.exit_code == 0, res.output
    out = json.loads((run / "patching.json").read_text())
    meta = out["meta"]
    assert (meta["alignment"], meta["scope"]) == ("aligned", "every position")
    assert out["readout"]["mode"] == mode
    # The unpatched readout is what the run scored.
    for rec in out["items"]:
        assert rec["source"] == pytest.approx(rec["stored_source"], abs=1e-4)
        assert rec["target"] == pytest.approx(rec["stored_target"], abs=1e-4)
    for check in out["identities"].values():
        assert check["denoise_max_abs_dev"] < 1e-4 and check["noise_max_abs_dev"] < 1e-4
    n_layers = 2
    assert len(out["resid"]["denoise"]) == n_layers + 1
    assert len(out["resid"]["denoise"][0]) == len(meta["first_item_tokens"]) > 20
    assert len(meta["edited_offsets"]) == 1  # the one word that differs
    # Every interval resamples the items' templates, which the meta counts.
    from probe.analysis import answers as ans

    templates = set(ans.item_clusters(ans.load_run(run), [i["item_id"] for i in out["items"]]))
    assert meta["n_clusters"] == len(templates) == out["metric"]["gap"]["n_clusters"]
    assert last_cell_clusters(out) == len(templates)
    # The sup-t band of every attn/mlp output is centred on that output's effect.
    sim, comps = out["components"]["simultaneous"], out["components"]["denoise"]
    measure = "normalised" if out["metric"]["gap"]["reliable"] else "delta"
    assert sim["measure"] == measure and sim["n_clusters"] == len(templates)
    for comp in ("attn", "mlp"):
        for band, cell in zip(sim[comp], comps[comp], strict=True):
            if band[0] is not None:  # None: no spread over resamples (NaN in JSON)
                assert (band[0] + band[1]) / 2 == pytest.approx(cell[measure]["mean"],
                                                                abs=1e-9)
    assert (out["resid"]["answer"] is None) == (mode == "letter")
    assert len(out["heads"]["denoise"][1]) == 4
    assert len(out["components"]["noise"]["mlp"]) == n_layers
    last = out["resid"]["denoise"][-1][-1]
    assert last["per_item"] == pytest.approx([i["source"] for i in out["items"]], abs=1e-5) \
        or mode == "text"  # text: the unembedding also reads the option tails
    for name in ("patching_resid.png", "patching_components.png", "patching_heads.png"):
        assert (run / "plots" / name).stat().st_size > 1000
    from probe.presentation.report_analyses import patching_html

    table = patching_html(out)  # the report's table says what it shows of the grid, and n
    assert f"all {len(meta['first_item_tokens'])} patched positions (every position)" in table
    assert f"over n={meta['n_items']} items" in table


def last_cell_clusters(out: dict) -> int:
    return out["resid"]["denoise"][-1][-1]["delta"]["n_clusters"]


def test_patch_command_on_an_unaligned_run(tmp_path: Path) -> None:
    from probe.analysis.patch_study import run_patching

    loaded = sharp_model()
    run = make_run(tmp_path, loaded, mode="text")
    out = run_patching(str(run), "instruct-1", "baseline", loaded=loaded)
    assert (out["meta"]["alignment"], out["meta"]["scope"]) == ("unaligned",
                                                                "shared suffix (last 1)")
    assert out["meta"]["n_items"] + out["meta"]["skipped"]["no_answer_pair"] == 8
    assert len(out["resid"]["denoise"][0]) == 1


class patch_model:  # noqa: N801 - a context manager used like a function
    """Make ``load_model`` return a given model inside the block (the CLI loads by name)."""

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded

    def __enter__(self) -> None:
        from probe.analysis import answers as ans

        self.old = ans.load_run_model
        ans.load_run_model = lambda run, device=None: self.loaded  # type: ignore[assignment]

    def __exit__(self, *exc: object) -> None:
        from probe.analysis import answers as ans

        ans.load_run_model = self.old  # type: ignore[assignment]


def test_placebo_control_is_recorded_and_judged(tmp_path: Path) -> None:
    from probe.analysis import answers as ans
    from probe.analysis.patch_control import MIN_ITEMS, NOT_DISTINGUISHABLE
    from probe.analysis.patch_study import run_patching
    from probe.presentation.report_where import patching_where

    loaded = sharp_model()
    run_dir = make_run(tmp_path, loaded, mode="text",
                       conditions=("instruct-1", "negate-1", "placebo-1"))
    out = run_patching(str(run_dir), "instruct-1", "negate-1", loaded=loaded)
    ctrl = out["control"]
    assert ctrl["name"] == "placebo-1" and ctrl["n"] == out["meta"]["n_items"]
    run = ans.load_run(run_dir)
    by_id = {i["item_id"]: i for i in out["items"]}
    # The control's gap is the run's own stored readouts: placebo minus negate, per item.
    want = [ro.row_value(run.rows[(i, "placebo-1")]) - by_id[i]["stored_target"]  # type: ignore[operator]
            for i in by_id]
    assert ctrl["gap"]["mean"] == pytest.approx(float(np.mean(want)), abs=1e-4)
    low, high = ctrl["instruct-1_minus_control"]["ci"]
    k = ctrl["instruct-1_minus_control"]["n_clusters"]
    # Fewer templates than MIN_ITEMS give a degenerate interval: never "differs" then.
    assert (ctrl["verdict"] == NOT_DISTINGUISHABLE) == (low <= 0 <= high or k < MIN_ITEMS)
    assert k == out["meta"]["n_clusters"] == len(set(ans.item_clusters(run, list(by_id))))
    assert f"Control placebo-1 (n={ctrl['n']} items, {k} templates)" in patching_where(out)
    # The instruction as its own control cannot be told apart from it.
    same = run_patching(str(run_dir), "instruct-1", "negate-1", loaded=loaded,
                        control="instruct-1")["control"]
    assert same["instruct-1_minus_control"]["mean"] == pytest.approx(0.0, abs=1e-4)
    assert same["verdict"] == NOT_DISTINGUISHABLE
    assert NOT_DISTINGUISHABLE in patching_where({**out, "control": same})


@pytest.mark.parametrize("mode", ["text", "letter"])
def test_columns_before_the_edit_are_skipped_exactly(tmp_path: Path, mode: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Patching leaves out each row's columns before its first edited token (the same
    activations in both passes): every patched readout equals the one computed with them."""
    from probe.analysis import answers as ans
    from probe.analysis import patch_plan as pp
    from probe.analysis import patching as pt
    from probe.engine.inference import Engine

    _register_aligned()
    loaded = sharp_model()
    run_dir = make_run(tmp_path, loaded, mode=mode, conditions=("test-unbiased", "test-grandson"))
    run = ans.load_run(run_dir)
    engine = Engine(loaded, run.config.batch_size)
    pairs, _ = pp.build_pairs(run, engine, "test-unbiased", "test-grandson")
    plan = pp.plan(engine, pairs, None)
    assert plan.alignment == "aligned"
    src, tgt = (ro.pack(engine, [q]) for q in (pairs[0].source, pairs[0].target))
    edit = pt.first_difference(tgt, src, 0)
    assert 0 < edit < src.prompt_end[0]  # the instruction's edit, inside the prompt
    fast = pt.patch_pairs(engine, mode, pairs, plan.patches())
    monkeypatch.setattr(pt, "first_difference", lambda into, frm, b: 0)
    full = pt.patch_pairs(engine, mode, pairs, plan.patches())
    for key in ("source", "target", "denoise", "noise"):
        np.testing.assert_allclose(fast[key], full[key], atol=1e-5, rtol=0)
    assert np.array_equal(fast["valid"], full["valid"])
