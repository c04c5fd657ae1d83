"""Output-study figures: which files are drawn, what the error bars show, condition order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from probe.presentation import plots
from probe.store.provenance import provenance
from probe.store.runs import RunFolder

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def cell(bias: float | None, acc: float | None, n: int = 10) -> dict[str, Any]:
    """A BBQ metrics cell with a +-0.1 interval (or an undefined one)."""
    ci = [None, None] if bias is None else [bias - 0.1, bias + 0.1]
    return {"bias_score": bias, "bias_score_ci": ci, "accuracy": acc,
            "accuracy_ci": [None, None] if acc is None else [acc - 0.05, acc + 0.05],
            "n": n, "n_unparsed": 1, "n_bias": n // 2, "n_excluded_no_target": 0}


def bbq_block(bias: float, acc: float, shares: tuple[float, float, float]) -> dict[str, Any]:
    ctx = {"ambig": cell(bias, acc), "disambig": cell(bias / 2, acc)}
    return {"overall": ctx,
            "by_category": {"Age": ctx, "Religion": {"ambig": cell(None, None, 0),
                                                     "disambig": cell(0.2, 0.5)}},
            "answer_positions": {"0": shares[0], "1": shares[1], "2": shares[2], "n": 20}}


def wino_block(r: float) -> dict[str, Any]:
    occ = {"nurse": {"p_female": 0.8, "n": 3, "bls_pct_female": 90.0, "bergsma_pct_female": 80.0},
           "plumber": {"p_female": 0.1, "n": 3, "bls_pct_female": 2.0,
                       "bergsma_pct_female": None}}
    return {"n": 6, "n_unparsed": 0, "rates": {"male": 0.5, "female": 0.3, "neutral": 0.2},
            "p_female_source": "option_scores", "n_occupations": 2, "r_bls": r,
            "r_bls_ci": [None, None], "r_bergsma": None, "r_bergsma_ci": [None, None],
            "by_occupation": occ}


def metrics(bbq: bool = True, wino: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, bias, shares in (("baseline", 0.4, (0.6, 0.3, 0.1)),
                               ("instruct-1", 0.1, (0.4, 0.3, 0.3))):
        out[name] = {}
        if bbq:
            out[name]["bbq"] = bbq_block(bias, 0.5, shares)
        if wino:
            out[name]["winogender"] = wino_block(bias)
    return {"conditions": out}


def make_run(path: Path, data: dict[str, Any], conditions: list[str] | None = None) -> Path:
    """A run folder with a hand-written metrics.json (no rows, no model)."""
    folder = RunFolder.create_or_resume(path, {"model": "hand-made", "conditions": conditions},
                                        provenance())
    folder.write_metrics(data)
    return path


BBQ_FIGS = {"bbq_bias.png", "bbq_accuracy.png", "bbq_bias_by_category.png",
            "bbq_answer_positions.png"}
WINO_FIGS = {"winogender_scatter.png", "winogender_rates.png"}


@pytest.mark.parametrize(("bbq", "wino", "expected"), [
    (True, True, BBQ_FIGS | WINO_FIGS), (True, False, BBQ_FIGS), (False, True, WINO_FIGS)])
def test_plot_run_draws_the_figures_that_apply(tmp_path: Path, bbq: bool, wino: bool,
                                               expected: set[str]) -> None:
    run = make_run(tmp_path / "run", metrics(bbq, wino))
    paths = plots.plot_run(run)
    assert {p.name for p in paths} == expected
    assert {p.name for p in (run / "plots").iterdir()} == expected
    for path in paths:
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000


def test_error_bars_span_the_interval_and_are_never_negative() -> None:
    plt = plots.pyplot()
    fig, ax = plt.subplots()
    inside = cell(0.3, 0.5)
    outside = {"bias_score": 0.9, "bias_score_ci": [0.1, 0.5]}  # estimate above its interval
    plots._interval_points(ax, [0, 1], [inside, outside], "bias_score")
    segments = ax.containers[0].lines[2][0].get_segments()
    plt.close(fig)
    (x0, lo0), (_, hi0) = segments[0]
    assert x0 == 0 and lo0 == pytest.approx(0.2) and hi0 == pytest.approx(0.4)
    (_, lo1), (_, hi1) = segments[1]
    assert lo1 == pytest.approx(0.1) and hi1 == pytest.approx(0.9)  # clipped, not inverted


def test_undefined_values_do_not_break_a_figure(tmp_path: Path) -> None:
    data = metrics(wino=False)
    data["conditions"]["baseline"]["bbq"]["overall"]["ambig"] = cell(None, None, 0)
    paths = plots.plot_metrics(data, tmp_path)
    assert len(paths) == len(BBQ_FIGS)


def test_condition_order_puts_baseline_first_then_config_order() -> None:
    names = ("negate-1", "baseline", "cot", "instruct-1")
    data: dict[str, Any] = {"conditions": {c: {} for c in names}}
    assert plots.condition_order(data, {"conditions": ["instruct-1", "negate-1"]}) == [
        "baseline", "instruct-1", "negate-1", "cot"]
    assert plots.condition_order(data)[0] == "baseline"


def test_run_without_metrics_json_is_scored_from_rows(tmp_path: Path) -> None:
    folder = RunFolder.create_or_resume(tmp_path / "run", {"model": "m"}, provenance())
    row = {"benchmark": "bbq", "item_id": "i1", "condition": "baseline", "pred": 0, "label": 0,
           "category": "Age", "context_condition": "ambig", "question_polarity": "neg",
           "group": "g", "mode": "text", "meta": {"target_index": 1, "unknown_index": 0}}
    with folder.appender() as app:
        app.append(row)
    assert not folder.metrics.exists()
    names = {p.name for p in plots.plot_run(folder.path)}
    assert names == BBQ_FIGS


def test_probability_axis_goes_log_only_when_values_span_decades() -> None:
    plt = plots.pyplot()
    fig, (wide, narrow) = plt.subplots(1, 2)
    assert plots.probability_axis(wide, [1e-4, 0.02, 0.6, float("nan"), 0.0])
    assert wide.get_yscale() == "log"
    assert not plots.probability_axis(narrow, [0.2, 0.5, 0.9])
    assert narrow.get_yscale() == "linear"
    plt.close(fig)


def test_winogender_scatter_uses_a_log_axis_for_tiny_probabilities(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = metrics(bbq=False)
    for block in data["conditions"].values():
        block["winogender"]["by_occupation"]["plumber"]["p_female"] = 1e-5
    scales: list[str] = []
    real_save = plots.save_figure

    def spy(fig: Any, path: Path, layout: bool = True) -> Path:
        scales.append(fig.axes[0].get_yscale())
        return real_save(fig, path, layout)

    monkeypatch.setattr(plots, "save_figure", spy)
    plots.plot_winogender_scatter(plots._wino(data, ["baseline"]), tmp_path / "w.png")
    plots.plot_winogender_scatter(plots._wino(metrics(bbq=False), ["baseline"]),
                                  tmp_path / "v.png")
    assert scales == ["log", "linear"]
