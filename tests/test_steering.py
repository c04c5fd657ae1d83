"""Steering: alpha = 0 reproduces the run, other alphas move scores, directions are right."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

from probe.analysis import answers as ans
from probe.analysis import steer_controls as sc
from probe.analysis import steering as st
from probe.engine.inference import Engine
from probe.engine.models import LoadedModel, load_model
from tests.test_patching import make_run


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return load_model("tiny-random")


@pytest.mark.parametrize("mode", ["letter", "generate"])
def test_alpha_zero_reproduces_run_and_alpha_moves_scores(tmp_path: Path, tiny: LoadedModel,
                                                          mode: str) -> None:
    run_dir = make_run(tmp_path, tiny, mode=mode)
    run = ans.load_run(run_dir)
    engine = Engine(tiny, run.config.batch_size)
    units = [st.Unit(it, "baseline") for it in run.items]
    vec = st.compute_directions(engine, run, "instruct-1", [1])[1]
    hook = st.resid_hook(1)
    zero = st.score_baseline(engine, run, units, [(hook, st.add_hook(0.0 * vec))])
    assert len(zero) == len(units)
    for row in zero:
        before = run.rows[(row["item_id"], "baseline")]
        assert row["pred"] == before["pred"] and row["output"] == before["output"]
        assert row["option_scores"] == before["option_scores"]
    moved = st.score_baseline(engine, run, units, [(hook, st.add_hook(100.0 * vec))])
    field = "option_scores" if mode == "letter" else "output"
    assert any(a[field] != b[field] for a, b in zip(zero, moved, strict=True))


def test_direction_matches_cached_activations(tmp_path: Path, tiny: LoadedModel) -> None:
    from probe.activations import ActivationStore

    run_dir = make_run(tmp_path, tiny, cache_acts=True, act_dtype="float32")
    run = ans.load_run(run_dir)
    vec = st.compute_directions(Engine(tiny, 3), run, "instruct-1", [0, 1])
    store = ActivationStore(run_dir / "activations")
    index = store.key_to_row()
    ids = [it.item_id for it in run.items]
    for layer in (0, 1):
        hook = st.resid_hook(layer)
        means = {c: store.load(hook, [index[(i, c)] for i in ids]).mean(0)
                 for c in ("instruct-1", "baseline")}
        torch.testing.assert_close(vec[layer], means["instruct-1"] - means["baseline"],
                                   atol=1e-4, rtol=1e-4)


def test_random_control_has_equal_norm() -> None:
    vec = torch.randn(16) * 3
    rnd = sc.random_like(vec, seed=1)
    assert float(rnd.norm()) == pytest.approx(float(vec.norm()), rel=1e-5)
    assert abs(float(torch.nn.functional.cosine_similarity(rnd, vec, dim=0))) < 0.9
    assert torch.equal(rnd, sc.random_like(vec, seed=1))


def test_steer_command(tmp_path: Path, tiny: LoadedModel) -> None:
    from probe.commands.analysis import steer

    run_dir = make_run(tmp_path, tiny)
    group = click.Group()
    group.add_command(steer)
    res = CliRunner().invoke(group, ["steer", str(run_dir), "--instruction", "instruct-1",
                                     "--layers", "0,1", "--alphas", "-4,0,4",
                                     "--n-random", "3"])
    assert res.exit_code == 0, res.output
    out = json.loads((run_dir / "steering.json").read_text())
    assert out["meta"]["alpha0_matches_run"] is True
    assert len(out["results"]) == 2 * 2 * 3
    metrics = json.loads((run_dir / "metrics.json").read_text())
    base = metrics["conditions"]["baseline"]["bbq"]["overall"]["ambig"]["bias_score"]
    for rec in out["results"]:
        if rec["alpha"] == 0:
            assert rec["ambig"]["mean"] == base
    assert (run_dir / "plots" / "steering.png").stat().st_size > 1000
    bad = CliRunner().invoke(group, ["steer", str(run_dir), "--instruction", "instruct-1",
                                     "--layers", "7"])
    assert bad.exit_code != 0 and "--layers" in str(bad.exception or bad.output)


@pytest.mark.parametrize("mode", ["text", "generate"])
def test_steering_readout_at_alpha_zero_is_the_runs(tmp_path: Path, mode: str) -> None:
    from probe.analysis import readout as ro
    from tests.test_patching import sharp_model

    loaded = sharp_model()
    run_dir = make_run(tmp_path, loaded, mode=mode)
    out = st.run_steering(str(run_dir), "instruct-1", layers=[1], alphas=[0.0, 8.0],
                          loaded=loaded, n_random=3)
    block = out["readout"]
    assert block["mode"] == mode and block["alpha0"]["n"] >= 4
    if mode == "text":  # the run stored these scores: alpha 0 reproduces them
        assert block["alpha0"]["mean"] == pytest.approx(block["run_stored"]["mean"], abs=1e-5)
    else:  # no stored scores: alpha 0 is the unhooked readout of the run's prompts
        from probe.analysis import answers as ans
        from probe.engine.inference import Engine

        run = ans.load_run(run_dir)
        engine = Engine(loaded)
        qs = [q for q in (ro.query(run, engine, it, "baseline") for it in run.items) if q]
        plain = ro.score(engine, mode, qs).numpy()
        assert block["alpha0"]["mean"] == pytest.approx(float(plain.mean()), abs=1e-5)
    moved = [r["readout"]["mean"] for r in out["results"] if r["alpha"] == 8.0]
    assert all(m != pytest.approx(block["alpha0"]["mean"], abs=1e-6) for m in moved)


@pytest.mark.slow
def test_alpha_zero_on_the_real_model(tmp_path: Path, real_model: LoadedModel) -> None:
    # two templates: each half is steered with the direction fitted on the other
    run_dir = make_run(tmp_path, real_model, per_cell=2, model="smollm2-135m")
    out = st.run_steering(str(run_dir), "instruct-1", layers=[15], alphas=[0.0],
                          loaded=real_model)
    assert out["meta"]["alpha0_matches_run"] is True
    assert "held out" in out["meta"]["direction_source"]
    assert min(out["meta"]["norms"]["15"]) > 0


def test_steering_adds_only_at_the_last_prompt_position() -> None:
    vec = torch.ones(4)
    hook = sc.LastPromptAdd(vec)
    x = torch.zeros(2, 5, 4)
    out = hook(x, None)  # a left-padded prompt pass: the prompt ends at the last column
    assert torch.equal(out[:, -1], torch.ones(2, 4)) and out[:, :-1].abs().sum() == 0
    hook.ends = [3, 2]  # a packed prompt+options pass: prompts end before the options
    out = hook(x, None)
    assert out[0, 2].sum() == 4 and out[1, 1].sum() == 4 and out.sum() == 8
    assert torch.equal(hook(torch.zeros(2, 1, 4), None), torch.zeros(2, 1, 4))  # a step


def test_steered_forward_differs_from_the_plain_one_only_at_the_last_position(
        tiny: LoadedModel) -> None:
    from probe.engine.hooks import Capture

    engine = Engine(tiny, 2)
    hook = st.resid_hook(0)
    texts = ["a short prompt here", "another, longer prompt goes here"]
    captured = []
    for hooks in ([], [(hook, sc.LastPromptAdd(torch.ones(tiny.d_model) * 5))]):
        capture = Capture([st.resid_hook(1)], 4)
        with engine.running(hooks):
            engine.forward_last(texts, capture=capture)
        captured.append(capture.take()[st.resid_hook(1)])
    diff = (captured[1] - captured[0]).abs().sum(-1)
    assert (diff[:, :-1] == 0).all() and (diff[:, -1] > 0).all()


def test_held_out_steering_with_a_random_band(tmp_path: Path, tiny: LoadedModel,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = make_run(tmp_path, tiny)
    out = st.run_steering(str(run_dir), "instruct-1", layers=[1], alphas=[0.0, 0.5, 1.0],
                          loaded=tiny, n_random=4)
    assert out["meta"]["alpha0_matches_run"] is True and out["meta"]["n_random"] == 4
    rand = [r for r in out["results"] if r["kind"] == "random" and r["alpha"] != 0]
    assert len(rand) == 2 and all(r["n_random"] == 4 for r in rand)
    for r in rand:
        low, high = r["readout"]["ci"]
        assert low <= r["readout"]["mean"] <= high
        assert r["verdict"] == ("no verdict: 4 random directions (at least 20 for a 5-95% "
                                "band)")
    # each half is steered with the direction fitted on the other half's templates
    run = ans.load_run(run_dir)
    halves = sc.template_halves([it.group for it in run.items], 0)
    by_half = [{it.item_id for it, h in zip(run.items, halves, strict=True) if h == f}
               for f in (0, 1)]
    assert all(by_half)
    seen: list[set[str] | None] = []
    real = st.compute_directions

    def spy(engine, run, instruction, layers, only=None):
        seen.append(only)
        return real(engine, run, instruction, layers, only)

    monkeypatch.setattr(st, "compute_directions", spy)
    st.run_steering(str(run_dir), "instruct-1", layers=[1], alphas=[0.0], loaded=tiny)
    assert seen == [by_half[1], by_half[0]]  # half 0 steered with half 1's, and back


def test_report_says_when_the_steered_value_is_inside_the_random_band(
        tmp_path: Path, tiny: LoadedModel) -> None:
    from probe.presentation.report_where import steering_where

    run_dir = make_run(tmp_path, tiny)
    out = st.run_steering(str(run_dir), "instruct-1", layers=[1], alphas=[0.0, 1.0],
                          loaded=tiny, n_random=3)
    rec = next(r for r in out["results"] if r["kind"] == "random" and r["alpha"] == 1.0)
    html = steering_where(out)
    assert "3 random directions of the same norm" in html
    assert ("not distinguishable from the control" in html) == (
        rec["verdict"] == "not distinguishable from the control")
    low, high = rec["readout"]["ci"]
    here = next(r for r in out["results"] if r["kind"] == "direction" and r["alpha"] == 1.0)
    assert (low <= here["readout"]["mean"] <= high) == ("not distinguishable" in rec["verdict"])


def test_bad_random_direction_counts_and_alphas_are_refused(tmp_path: Path) -> None:
    """0 random directions or no finite alpha is a usage error at the command line and in
    the API (before the model is loaded)."""
    from probe.commands.analysis import steer
    from probe.errors import ConfigError

    with pytest.raises(ConfigError, match="--n-random"):
        st.run_steering(str(tmp_path), "instruct-1", n_random=0)
    for alphas in ([], [float("nan")]):
        with pytest.raises(ConfigError, match="--alphas"):
            st.run_steering(str(tmp_path), "instruct-1", alphas=alphas)
    group = click.Group()
    group.add_command(steer)
    res = CliRunner().invoke(group, ["steer", str(tmp_path), "--instruction", "instruct-1",
                                     "--n-random", "0"])
    assert res.exit_code == 2 and "--n-random" in res.output, res.output


def test_random_band_verdict_needs_twenty_draws_and_a_width() -> None:
    steered = {"readout": {"mean": 0.5}}
    wide = {"n_random": 20, "readout": {"ci": [-0.1, 0.1]}}
    assert sc.verdict(steered, wide) == "outside the random-direction band"
    assert sc.verdict({"readout": {"mean": 0.0}}, wide) == "not distinguishable from the control"
    assert sc.verdict(steered, {**wide, "n_random": 19}).startswith("no verdict: 19 random")
    point = {"n_random": 20, "readout": {"ci": [0.1, 0.1]}}
    assert sc.verdict(steered, point) == "no verdict: zero-width random band"
