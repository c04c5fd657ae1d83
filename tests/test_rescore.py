"""Re-scoring a run folder needs no model and reproduces its metrics.json byte for byte."""

from __future__ import annotations

from click.testing import CliRunner

from probe.cli import cli
from probe.config import RunConfig
from probe.study import run_study


def test_rescore_reproduces_metrics(tiny, data_dir, tmp_path):
    cfg = RunConfig(model="tiny-random", categories=["Age", "Religion"], limit=4,
                    conditions=["baseline", "instruct-1"], data_dir=str(data_dir))
    folder = run_study(cfg, tmp_path / "run", loaded=tiny).folder
    before = folder.metrics.read_bytes()
    folder.metrics.unlink()
    result = CliRunner().invoke(cli, ["score", str(folder.path), "--by-category"])
    assert result.exit_code == 0, result.output
    assert folder.metrics.read_bytes() == before
    assert "Religion" in result.output and "answer position habit" in result.output
