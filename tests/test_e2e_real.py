"""The whole internal analysis on the real embedded model, on a small run, via the CLI.

42 BBQ items x 3 conditions with activations cached; then probes, directions, patching,
steering, logit lens, plots and the report must all complete and produce their files.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from probe.cli import cli

pytestmark = pytest.mark.slow

EXPECTED_PLOTS = {"bbq_bias.png", "bbq_accuracy.png", "bbq_answer_positions.png",
                  "probes.png", "directions.png", "patching_resid.png",
                  "patching_components.png", "steering.png", "lens.png"}


def _ok(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_internal_analysis_end_to_end(real_model, data_dir, tmp_path):
    run = tmp_path / "run"
    out = _ok(["run", "--benchmark", "bbq", "--limit", "6", "--mode", "letter",
               "--condition", "baseline", "--condition", "instruct-3",
               "--condition", "negate-3", "--cache-acts", "--data-dir", str(data_dir),
               "--out", str(run)])
    assert "instruct-3" in out
    assert sum(1 for _ in (run / "generations.jsonl").open()) == 42 * 3
    _ok(["probes", str(run)])
    # --limit is items per category (7 categories here), as for `probe run`.
    _ok(["patch", str(run), "--instruction", "instruct-3", "--limit", "1"])
    # Two random draws: the chain must complete; the band's statistics are tested elsewhere.
    _ok(["steer", str(run), "--instruction", "instruct-3", "--layers", "15",
         "--alphas", "-4,0,4", "--limit", "1", "--n-random", "2"])
    _ok(["lens", str(run), "--limit", "1"])
    _ok(["report", str(run)])
    plots = {p.name for p in (run / "plots").glob("*.png")}
    assert not EXPECTED_PLOTS - plots, EXPECTED_PLOTS - plots
    html = (run / "report.html").read_text()
    assert html.count("data:image/png;base64") >= len(EXPECTED_PLOTS)
    steering = json.loads((run / "steering.json").read_text())
    assert steering["meta"]["alpha0_matches_run"]
    for name in ("probes.json", "directions.json", "patching.json", "lens.json",
                 "metrics.json"):
        json.loads((run / name).read_text())
