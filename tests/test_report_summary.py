"""The report's summary: gains from metrics.json with their verdicts, small-n warnings,
localisation, stages, examples, and readable tables."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from test_gains import bbq_rows
from test_plots import make_run, metrics
from test_report import patching, probes_json

from probe.presentation import report, report_details, report_summary
from probe.presentation.report_where import component_peak, resid_onset
from probe.scoring.metrics import compute_metrics
from probe.store.runs import RunFolder


def gains_run(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A run whose metrics.json carries real paired gains: instruct-1 clearly better,
    negate-1 noise (same construction as tests/test_gains.py)."""
    rows = (bbq_rows("baseline") + bbq_rows("instruct-1", shift=0.5)
            + bbq_rows("negate-1", noise_seed=2))
    data = compute_metrics(rows, n_boot=300)
    return make_run(tmp_path / "run", data, ["baseline", "instruct-1", "negate-1"]), data


def section(page: str, start: str, end: str) -> str:
    return page[page.index(start):page.index(end, page.index(start))]


def test_summary_comes_first_and_shows_the_stored_gains(tmp_path: Path) -> None:
    run, data = gains_run(tmp_path)
    page = report.write_report(run).read_text(encoding="utf-8")
    summary = section(page, "Summary:", "</section>")
    assert page.index("Summary:") < page.index("<h2>Run</h2>") < page.index("Metrics per")
    gains = data["gains"]
    for cond in ("instruct-1", "negate-1"):
        gain = gains[cond]["bbq"]["accuracy_ambig"]
        shown = (f"{gain['value']:+.3f} [{gain['ci'][0]:+.3f}, {gain['ci'][1]:+.3f}]")
        assert shown in summary
        assert f"n={gain['n_items']} items, {gain['n_clusters']} clusters" in summary
    self_corr = section(summary, "Self-correction gain", "Negation effect")
    negation = section(summary, "Negation effect", "Where inside")
    assert "instruct-1" in self_corr and "negate-1" not in self_corr
    assert "negate-1" in negation and "instruct-1" not in negation
    # instruct-1's accuracy gain excludes 0, negate-1's does not (tests/test_gains.py)
    assert "differs from 0" in self_corr
    assert "not distinguishable from 0" in negation


def test_degenerate_intervals_get_no_verdict_and_a_warning() -> None:
    noise = {"value": -3e-13, "ci": [-3e-13, -3e-13], "n_items": 40, "n_clusters": 10,
             "spans_zero": False}
    assert report_summary.verdict(noise) == "no verdict: zero-width interval"
    one = {"value": 0.0, "ci": [0.0, 0.0], "n_items": 2, "n_clusters": 1, "spans_zero": True}
    assert report_summary.small_n_reasons(one) == ["n<10", "one cluster", "zero-width interval"]
    few = {"value": 0.5, "ci": [0.1, 0.9], "n_items": 6, "n_clusters": 6, "spans_zero": False}
    assert report_summary.verdict(few) == "differs from 0"
    cell = report_summary.gain_cell(few)
    assert "⚠ n&lt;10" in cell
    fine = {"value": 0.5, "ci": [0.1, 0.9], "n_items": 60, "n_clusters": 15,
            "spans_zero": False}
    assert "⚠" not in report_summary.gain_cell(fine)


def test_no_gains_block_says_why(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", metrics())  # hand-made, no "gains"
    page = report.write_report(run).read_text(encoding="utf-8")
    assert "No gains over the baseline" in page and "probe score RUN" in page


def test_localisation_states_no_effect_when_absent_or_unreliable(tmp_path: Path) -> None:
    run, _ = gains_run(tmp_path)
    page = report.write_report(run).read_text(encoding="utf-8")
    assert "Patching has not run" in section(page, "Where inside", "</section>")
    values = {"attn": [0.1, -0.7], "mlp": [0.3, 0.6]}
    unreliable = patching(values, reliable=False)
    unreliable["metric"]["gap"].update({"mean": 0.01, "ci": [-0.2, 0.3],
                                        "note": "gap interval includes 0"})
    (run / "patching.json").write_text(json.dumps(unreliable))
    where = section(report.write_report(run).read_text(encoding="utf-8"), "Where inside",
                    "</section>")
    assert "No localisable effect" in where and "its 95% interval contains 0" in where
    assert "attn_out layer" not in where
    # A large gap on too few items: said so, not "below the threshold".
    unreliable["metric"]["gap"].update({"mean": 2.0, "ci": [1.9, 2.1], "n": 3, "note": None})
    (run / "patching.json").write_text(json.dumps(unreliable))
    where = section(report.write_report(run).read_text(encoding="utf-8"), "Where inside",
                    "</section>")
    assert "it rests on 3 items (under 5)" in where and "threshold" not in where


def test_localisation_names_onset_and_peak_with_intervals(tmp_path: Path) -> None:
    data = patching({"attn": [0.1, -0.7, 0.2], "mlp": [0.3, 0.05, 0.6]})
    # residual rows: the last position's effect is 0 [-0.1, 0.1] then 0.8 [0.6, 1.0]
    flat = {"normalised": {"mean": 0.0, "ci": [-0.1, 0.1]}, "n": 12}
    full = {"normalised": {"mean": 0.8, "ci": [0.6, 1.0]}, "n": 12}
    data["resid"]["denoise"] = [[flat], [flat], [full], [full]]
    data["resid"]["labels"] = ["resid_pre 0", "resid_pre 1", "resid_pre 2", "resid_post 2"]
    data["resid"]["noise"] = data["resid"]["denoise"]
    data["meta"] = {"source": "instruct-1", "target": "baseline", "n_items": 12}
    data["identities"] = {"embedding_all": {"denoise_max_abs_dev": 2e-6,
                                            "noise_max_abs_dev": 0.0}}
    assert resid_onset(data, "normalised")["label"] == "resid_pre 2"
    assert component_peak(data, "normalised")["component"] == "attn_out"
    run, _ = gains_run(tmp_path)
    (run / "patching.json").write_text(json.dumps(data))
    (run / "probes.json").write_text(json.dumps(probes_json({"logreg": [0.52, 0.9, 0.6]})))
    where = section(report.write_report(run).read_text(encoding="utf-8"), "Where inside",
                    "</section>")
    assert "instruct-1 → baseline, n=12 items" in where
    assert "<b>resid_pre 2</b> (0.800 [0.600, 1.000], n=12)" in where
    assert "attn_out layer 1</b> -0.700 [-0.700, -0.700]" in where
    assert "largest |effect| of the 6 attn/mlp outputs, chosen after looking" in where
    assert "not distinguishable from 0" not in where.split("Largest component")[1][:400]
    assert "above the control" in where and "control: none recorded" in where
    assert "Identity checks (embedding all): largest deviation 2.00e-06 nats" in where


def test_stages_are_read_from_the_folder(tmp_path: Path) -> None:
    run, _ = gains_run(tmp_path)
    (run / "generations.jsonl").write_text('{"item_id": "a", "condition": "baseline"}\n')
    (run / "probes.json").write_text(json.dumps(probes_json({"logreg": [0.5, 0.6]})))
    rows = {r[0]: r for r in report.stage_rows(RunFolder.open(run))}
    assert rows["generate"][1] == "incomplete (interrupted)"  # rows but never marked done
    assert rows["probes"][1] == "done" and rows["score"][1] == "done"
    assert rows["patching"][1] == "not run" and rows["lens"][1] == "not run"
    RunFolder.open(run).mark_stage_done("generate", n_rows=1)
    assert report.stage_rows(RunFolder.open(run))[0][1] == "done"


def test_examples_show_every_condition_escaped(tmp_path: Path) -> None:
    run, _ = gains_run(tmp_path)
    rows = [{"item_id": "bbq:Age:1", "condition": c, "benchmark": "bbq",
             "context_condition": "ambig", "prompt": f"<script>alert('{c}')</script> Who?",
             "output": "<b>(a)</b>", "pred": 0, "label": 2,
             "meta": {"target_index": 0, "unknown_index": 2}}
            for c in ("baseline", "instruct-1", "negate-1")]
    (run / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = report.write_report(run).read_text(encoding="utf-8")
    examples = section(page, "Example prompts", "<h2>Figures") if "<h2>Figures" in page \
        else page[page.index("Example prompts"):]
    assert "<script" not in page and "&lt;script&gt;alert(&#x27;negate-1&#x27;)" in page
    assert "&lt;b&gt;(a)&lt;/b&gt;" in examples
    for cond in ("baseline", "instruct-1", "negate-1"):
        assert f'<th scope="row">{cond}</th>' in examples
    assert "<td>stereotyped, wrong</td><td>ambiguous context</td>" in examples


def test_tables_have_word_headers_layer_columns_and_no_empty_header(tmp_path: Path) -> None:
    run, _ = gains_run(tmp_path)
    (run / "steering.json").write_text(json.dumps(
        {"meta": {"instruction": "instruct-1"},
         "results": [{"hook": "blocks.3.hook_resid_post", "alpha": 4.0,
                      "ambig": {"mean": -0.25, "ci": [-0.5, 0.0]}}]}))
    patched = patching({"attn": [0.1], "mlp": [0.2]})
    patched["heads"] = {"layers": [0], "denoise": [[
        {"normalised": {"mean": m, "ci": [m - 0.1, m + 0.1]}, "n": 9} for m in (0.1, -0.6, 0.3)]]}
    (run / "patching.json").write_text(json.dumps(patched))
    (run / "probes.json").write_text(json.dumps(probes_json({"logreg": [0.5, 0.9]})))
    page = report.write_report(run).read_text(encoding="utf-8")
    assert "<tr><td>0</td><td>1</td><td>-0.600 [-0.700, -0.500]</td><td>9</td></tr>" in page
    heads = re.findall(r"<thead><tr>(.*?)</tr></thead>", page)
    assert heads and all("<th></th>" not in h for h in heads)
    cells = [c for h in heads for c in re.findall(r"<th>(.*?)</th>", h)]
    assert not [c for c in cells if re.search(r"\w\.\w", c)], "dotted keys in headers"
    analyses = page[page.index("<h2>Analyses"):]
    per_layer = re.findall(r"<table><thead><tr><th>(.*?)</th>", analyses)
    assert per_layer and all(first == "layer" for first in per_layer)
    assert "<td>3</td>" in section(analyses, "steering.json", "settings")
    assert "meta › instruction" in analyses and "meta.instruction" not in analyses


def test_float_residue_prints_as_zero() -> None:
    cell = report_summary.gain_cell({"value": 8.88e-16, "ci": [8.88e-16, 8.88e-16],
                                     "n_items": 40, "n_clusters": 10, "spans_zero": False})
    assert "+0.000 [+0.000, +0.000]" in cell and "e-16" not in cell
    assert "no verdict: zero-width interval" in cell


def test_bbq_answers_are_named_by_role() -> None:
    meta = {"target_index": 0, "unknown_index": 2}
    roles = [report_details.bbq_role({"pred": p, "label": 2, "meta": meta})
             for p in (0, 1, 2, None)]
    assert roles == ["stereotyped, wrong", "anti-stereotyped, wrong", "unknown, correct",
                     "unparsed"]


def test_lens_tables_take_their_layer_from_the_labels(tmp_path: Path) -> None:
    run, _ = gains_run(tmp_path)
    cell = {"mean": -6.1, "ci": [-6.2, -6.0], "n": 3}
    (run / "lens.json").write_text(json.dumps(
        {"meta": {"layer_labels": ["embed", "0", "1"]},
         "conditions": {"baseline": {"n_items": 3, "layers": [
             {"biased": cell, "unbiased": cell} for _ in range(3)]}}}))
    lens = section(report.write_report(run).read_text(encoding="utf-8"), "lens.json", "settings")
    assert "<th>layer</th><th>biased</th>" in lens
    assert "<td>embed</td>" in lens and "<td>1</td>" in lens


def steering(direction: dict[float, tuple[float, float, float]],
             random: dict[float, tuple[float, float, float]]) -> dict[str, Any]:
    """steering.json at one layer: readout (mean, low, high) per alpha and kind."""
    return {"meta": {"instruction": "instruct-1", "n_items": 30},
            "results": [{"kind": kind, "layer": 2, "alpha": a,
                         "readout": {"mean": m, "ci": [lo, hi], "n": 30}}
                        for kind, table in (("direction", direction), ("random", random))
                        for a, (m, lo, hi) in table.items()]}


def test_steering_summary_compares_with_the_random_direction() -> None:
    from probe.presentation.report_where import steering_where

    zero = (0.0, -0.1, 0.1)
    clear = steering_where(steering({0.0: zero, 4.0: (0.5, 0.4, 0.6), 8.0: (0.9, 0.8, 1.0)},
                                    {0.0: zero, 4.0: (0.0, -0.1, 0.1), 8.0: (0.05, -0.1, 0.2)}))
    assert "layer 2, alpha 8.000: 0.900 [0.800, 1.000] vs 0.000 [-0.100, 0.100]" in clear
    assert "0.050 [-0.100, 0.200] (the intervals do not overlap)" in clear
    null = steering_where(steering({0.0: zero, 4.0: (0.1, -0.05, 0.25)},
                                   {0.0: zero, 4.0: (0.05, -0.1, 0.2)}))
    assert "not distinguishable from the control" in null
    assert steering_where({"results": []}) == ""


def test_patching_control_shows_its_difference_interval_n_and_verdict() -> None:
    """The placebo control reads as a sentence with the instruction-minus-control difference,
    its interval, n and the verdict; under MIN_ITEMS items it cannot 'differ'."""
    from probe.analysis.patch_control import MIN_ITEMS, NOT_DISTINGUISHABLE, control_verdict
    from probe.presentation.report_where import patching_where

    data = patching({"attn": [0.1], "mlp": [0.2]}, reliable=False)
    data["meta"] = {"source": "instruct-1", "target": "negate-1", "n_items": 7}
    for ci, n in (([0.05, 0.3], 7), ([-0.3, -0.05], 7), ([-0.1, 0.3], 7), ([0.2, 0.2], 1)):
        diff = {"mean": 0.15, "ci": ci, "n": n}
        verdict, note = control_verdict(diff, n)
        data["control"] = {"name": "placebo-1", "target": "negate-1", "n": n,
                           "gap": {"mean": -0.1, "ci": [-0.2, 0.0]},
                           "instruct-1_minus_control": diff, "verdict": verdict, "note": note}
        where = patching_where(data)
        assert "Control placebo-1 (n=" + str(n) + " items)" in where
        assert "instruct-1 − placebo-1 0.150 [" in where
        assert (verdict == NOT_DISTINGUISHABLE) == (ci[0] <= 0 <= ci[1] or n < MIN_ITEMS)
        assert verdict in where and "is differs" not in where
        if verdict != NOT_DISTINGUISHABLE:  # which side of the control
            side = "larger" if ci[0] > 0 else "smaller"
            assert verdict == f"differs from the control (the instruction gap is {side})"
        assert (note is not None) == (n < MIN_ITEMS) and (note is None or note in where)


def test_probe_verdict_needs_five_templates_and_shows_the_control_band() -> None:
    from probe.presentation.report_where import probes_where
    from tests.test_report import probes_json

    data = probes_json({"logreg": [0.52, 0.95, 0.6]})
    for layer in data["targets"]["biased_answer"]["layers"]:
        layer["logreg"].update({"p_value": 0.01, "n_templates": 3,
                                "control": {"accuracy_5_95": [0.41, 0.58]}})
    text = probes_where(data)
    assert "no verdict: 3 templates (under 5)" in text and "above the control" not in text
    assert "40 (3 templates)" in text and "0.500 (5-95% 0.410-0.580)" in text
    for layer in data["targets"]["biased_answer"]["layers"]:
        layer["logreg"]["n_templates"] = 12
    assert "above the control" in probes_where(data)


def test_a_number_without_its_interval_says_so() -> None:
    from probe.presentation.report_html import with_ci

    assert with_ci(0.25, [-0.25, 0.75]) == "0.250 [-0.250, 0.750]"
    assert with_ci(0.25, [None, None]) == "0.250 [no CI]" == with_ci(0.25, None)
    assert with_ci(None, None) == "n/a" == with_ci(float("nan"), [0.1, 0.2])


def test_metrics_rows_flag_few_templates_and_point_intervals() -> None:
    from probe.presentation.report_details import BBQ_HEADS, _bbq_row

    cell = {"bias_score": 0.2, "bias_score_ci": [0.1, 0.3], "accuracy": 0.6,
            "accuracy_ci": [0.5, 0.7], "n": 40, "n_clusters": 12, "n_unparsed": 0}
    row = _bbq_row({"ambig": cell, "disambig": {**cell, "n_clusters": 3,
                                                "bias_score_ci": [0.2, 0.2]}}, "c")
    assert len(row) == 1 + len(BBQ_HEADS) and BBQ_HEADS[3] == "templates"
    assert row[1:6] == ["0.200 [0.100, 0.300]", "0.600 [0.500, 0.700]", "40", "12", 0]
    assert row[6].endswith("⚠") and row[9] == "3 ⚠"


def test_steering_sentence_names_the_selection_and_tables_keep_n() -> None:
    from probe.presentation.report_analyses import _flat_cells
    from probe.presentation.report_where import steering_where

    def rec(kind: str, layer: int, alpha: float, mean: float, **extra: Any) -> dict:
        return {"kind": kind, "layer": layer, "alpha": alpha,
                "readout": {"mean": mean, "ci": [mean - 0.1, mean + 0.1], "n": 12,
                            "n_clusters": 6}, **extra}

    data = {"meta": {"instruction": "instruct-1", "n_items": 12}, "results": [
        rec("direction", 1, 0.0, 0.0), rec("direction", 1, 1.0, 0.5),
        rec("direction", 2, 0.0, 0.0), rec("direction", 2, 1.0, 0.2),
        rec("random", 1, 1.0, 0.0, n_random=20, verdict="outside the random-direction band")]}
    text = steering_where(data)
    assert "chosen among 2 steered layer x alpha settings after looking" in text
    assert "layer 1, alpha 1" in text
    cells = _flat_cells(data["results"][1])
    assert cells["readout"] == "0.500 [0.400, 0.600] (n=12, 6 templates)"


def test_largest_component_is_judged_by_its_simultaneous_band() -> None:
    """With a sup-t band recorded, the report judges the picked output by it: a marginal
    interval off 0 whose band spans 0 reads 'not distinguishable from 0'."""
    from probe.presentation.report_where import component_peak
    from tests.test_report import patching

    data = patching({"attn": [0.1, -0.7, 0.2], "mlp": [0.3, 0.05, 0.6]})
    data["components"]["simultaneous"] = {
        "measure": "normalised", "attn": [[0, 0.2], [-1.5, 0.1], [0, 0.4]],
        "mlp": [[0, 0.6], [-0.2, 0.3], [0.1, 1.1]]}
    peak = component_peak(data, "normalised")
    assert peak is not None and peak["band"] == [-1.5, 0.1]
    assert component_peak(data, "delta")["band"] is None  # a band of the other measure


def test_localisation_sentence_gives_the_band_and_its_verdict() -> None:
    from probe.presentation.report_where import patching_where
    from tests.test_report import patching

    data = patching({"attn": [0.1, -0.7, 0.2], "mlp": [0.3, 0.05, 0.6]})
    data["metric"]["gap"].update({"mean": 1.0, "ci": [0.8, 1.2], "n": 12})
    data["components"]["simultaneous"] = {
        "measure": "normalised", "attn": [[0, 0.2], [-1.5, 0.1], [0, 0.4]],
        "mlp": [[0, 0.6], [-0.2, 0.3], [0.1, 1.1]]}
    text = patching_where(data)
    assert "simultaneous 95% band over all 6, valid for that choice: [-1.500, 0.100]" in text
    assert "not distinguishable from 0" in text.split("Largest component")[1]
    del data["components"]["simultaneous"]
    assert "its interval is not adjusted for that choice" in patching_where(data)
