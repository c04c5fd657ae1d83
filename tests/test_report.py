"""The HTML report: self-contained, escaped, every figure embedded, analyses summarised."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import click
from click.testing import CliRunner
from test_plots import make_run, metrics

from probe.analysis import summary as asum
from probe.cli import ProbeGroup
from probe.commands.report import plots_cmd, report_cmd
from probe.presentation import report

PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def probes_json(accs: dict[str, list[float]]) -> dict:
    """probes.json with one target, each kind's accuracy per layer given."""
    layers = [{"hook": f"blocks.{i}.hook_resid_post", "layer": i,
               **{k: {"accuracy": a[i], "accuracy_ci": [a[i] - 0.1, a[i] + 0.1],
                      "control_accuracy": 0.5, "selectivity": a[i] - 0.5} for k, a in accs.items()}}
              for i in range(len(next(iter(accs.values()))))]
    return {"meta": {"kinds": list(accs)},
            "targets": {"biased_answer": {"n": 40, "skipped": None, "layers": layers},
                        "correct": {"n": 0, "skipped": "one class", "layers": []}}}


def test_report_is_self_contained_escaped_and_embeds_every_png(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", metrics())
    cfg = json.loads((run / "run.json").read_text())
    cfg["config"]["model"] = "<b>evil</b>"
    (run / "run.json").write_text(json.dumps(cfg))
    (run / "plots").mkdir()
    for name in ("bbq_bias.png", "mystery_stage.png", "patching_resid.png"):
        (run / "plots" / name).write_bytes(PIXEL)
    page = report.write_report(run).read_text(encoding="utf-8")
    assert "<b>evil</b>" not in page and "&lt;b&gt;evil&lt;/b&gt;" in page
    assert page.count("data:image/png;base64,") == 3
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    assert "<script" not in page and "<link" not in page
    assert report.CAPTIONS["bbq_bias.png"] in page
    assert "mystery_stage.png" in page
    for cond in ("baseline", "instruct-1"):
        assert f'<th scope="row">{cond}</th>' in page


def test_probe_table_reports_the_best_layer_of_each_kind(tmp_path: Path) -> None:
    accs = {"logreg": [0.5, 0.9, 0.7], "diffmeans": [0.8, 0.6, 0.55]}
    best = asum.probe_best(probes_json(accs))
    assert {(b["kind"], b["layer"]) for b in best} == {
        (k, a.index(max(a))) for k, a in accs.items()}
    run = make_run(tmp_path / "run", metrics())
    (run / "probes.json").write_text(json.dumps(probes_json(accs)))
    page = report.write_report(run).read_text(encoding="utf-8")
    assert "<h3>probes.json</h3>" in page and "0.900 [0.800, 1.000]" in page


def test_analysis_files_are_read_defensively(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", metrics())
    (run / "lens.json").write_text("{not json")
    (run / "steering.json").write_text(json.dumps(
        {"meta": {"instruction": "instruct-1"},
         "results": [{"layer": 3, "alpha": 4.0, "ambig": {"mean": -0.25, "ci": [-0.5, 0.0]}}]}))
    page = report.write_report(run).read_text(encoding="utf-8")
    assert "<h3>lens.json</h3><p>unreadable" in page
    assert "-0.250 [-0.500, 0.000]" in page and "meta › instruction" in page


def patching(values: dict[str, list[float]], reliable: bool = True) -> dict:
    """A patching.json with given denoising component effects per layer."""
    def cells(vals: list[float]) -> list[dict]:
        return [{"normalised": {"mean": v, "ci": [v, v]}, "delta": {"mean": v / 10}} for v in vals]

    n = len(values["attn"])
    row = [cells([0.1])]
    return {"metric": {"gap": {"reliable": reliable}},
            "resid": {"labels": [f"resid_pre {i}" for i in range(n)], "denoise": row * n,
                      "noise": row * n},
            "components": {"layers": list(range(n)),
                           "denoise": {c: cells(v) for c, v in values.items()}}}


def test_patching_peak_is_the_largest_component_effect() -> None:
    values = {"attn": [0.1, -0.7, 0.2], "mlp": [0.3, 0.05, 0.6]}
    summary = asum.patching_summary(patching(values))
    assert summary is not None
    peak = summary["peak"]
    flat = [(abs(v), c, i) for c, vs in values.items() for i, v in enumerate(vs)]
    _, comp, layer = max(flat)
    assert (peak["component"], peak["layer"]) == (comp, layer)
    assert peak["value"] == values[comp][layer]
    unreliable = asum.patching_summary(patching(values, reliable=False))
    assert unreliable is not None
    assert unreliable["measure"] == "delta"
    assert unreliable["peak"]["value"] == values[comp][layer] / 10
    assert asum.patching_summary({"layers": []}) is None


def test_peak_effect_finds_the_largest_magnitude_and_its_layer() -> None:
    data = {"layers": [{"layer": 0, "effect": 0.2}, {"layer": 5, "effect": -0.9}],
            "other": {"accuracy": 5.0}}
    assert asum.peak_effect(data) == {"path": "layers[1].effect", "value": -0.9, "layer": 5}
    assert asum.peak_effect({"accuracy": 1.0}) is None


def test_report_and_plots_commands(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", metrics())
    group = ProbeGroup("t")
    group.add_command(report_cmd)
    group.add_command(plots_cmd)
    runner = CliRunner()
    res = runner.invoke(group, ["plots", str(run)])
    assert res.exit_code == 0, res.output
    assert len(res.output.splitlines()) == len(list((run / "plots").glob("*.png"))) == 6
    res = runner.invoke(group, ["report", "--no-plots", str(run)])
    assert res.exit_code == 0 and res.output.strip() == str(run / "report.html")
    res = runner.invoke(group, ["report", str(tmp_path)])  # not a run folder
    assert res.exit_code == 2 and "not a run folder" in res.output
    assert isinstance(group, click.Group)


def test_end_to_end_on_a_tiny_run(tmp_path: Path, data_dir: Path, tiny) -> None:
    """A real run folder (tiny random model, one BBQ Age item): plots and report."""
    from probe.config import RunConfig
    from probe.engine.study import run_study

    cfg = RunConfig(model="tiny-random", limit=1, data_dir=str(data_dir), categories=["Age"],
                    conditions=["baseline", "instruct-1"])
    run_study(cfg, tmp_path / "run", loaded=tiny)
    from probe.presentation.plots import plot_run

    assert len(plot_run(tmp_path / "run")) == 6
    page = report.write_report(tmp_path / "run").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 6
    assert "tiny-random" in page and "Winogender" in page
    # The run's own metrics.json carries the paired gains, shown in the report.
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert saved["interval"]["resample"] == "template cluster"
    assert set(saved["gains"]["instruct-1"]) >= {"vs", "bbq", "winogender"}
    assert "Self-correction gain over the baseline" in page
