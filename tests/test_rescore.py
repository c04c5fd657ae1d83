"""Re-scoring a run folder needs no model and reproduces its metrics.json byte for byte;
a folder written under another run schema is refused in one line, its files untouched."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from probe.cli import cli
from probe.config import RunConfig
from probe.engine.study import run_study
from probe.store.run_schema import SCHEMA_VERSION

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finished(tiny, data_dir, tmp_path_factory) -> Path:
    """A finished tiny run over BBQ and Winogender (the test copies it before changing it)."""
    cfg = RunConfig(model="tiny-random", categories=["Age", "Religion"], limit=4,
                    conditions=["baseline", "instruct-1"], data_dir=str(data_dir))
    return run_study(cfg, tmp_path_factory.mktemp("rescore") / "run", loaded=tiny).folder.path


def _copy(run: Path, tmp_path: Path, schema_version: int | None = None) -> Path:
    folder = Path(shutil.copytree(run, tmp_path / "copy"))
    if schema_version is not None:
        info = json.loads((folder / "run.json").read_text())
        info["schema_version"] = schema_version
        (folder / "run.json").write_text(json.dumps(info))
    return folder


@pytest.mark.parametrize("target", ["folder", "generations.jsonl"])
def test_rescore_reproduces_metrics(finished, tmp_path, target):
    folder = _copy(finished, tmp_path)
    before = (folder / "metrics.json").read_bytes()
    assert {"bbq", "winogender"} <= set(json.loads(before)["conditions"]["baseline"])
    (folder / "metrics.json").unlink()
    arg = folder if target == "folder" else folder / "generations.jsonl"
    result = CliRunner().invoke(cli, ["score", str(arg), "--by-category"])
    assert result.exit_code == 0, result.output
    assert (folder / "metrics.json").read_bytes() == before
    assert "Religion" in result.output and "answer position habit" in result.output


def test_old_schema_run_is_refused_in_one_line(finished, tmp_path):
    folder = _copy(finished, tmp_path, schema_version=SCHEMA_VERSION - 1)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    proc = subprocess.run([sys.executable, "-m", "probe.cli", "score", str(folder)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in (str(folder), f"schema_version {SCHEMA_VERSION - 1}", "probe run",
                   "--model tiny-random"):
        assert needle in lines[0], (needle, lines[0])
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("version", [SCHEMA_VERSION - 1, SCHEMA_VERSION + 1])
def test_other_schema_refused_by_every_path(finished, tmp_path, version):
    """Through generations.jsonl too; a newer folder asks for a newer probe."""
    folder = _copy(finished, tmp_path, schema_version=version)
    result = CliRunner().invoke(cli, ["score", str(folder / "generations.jsonl")])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert f"schema_version {version}" in message and "\n" not in message
    assert ("upgrade probe" if version > SCHEMA_VERSION else "probe run") in message


def test_model_rows_without_run_json_are_refused(finished, tmp_path):
    """A run's rows copied away from their run.json have no known schema."""
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(finished / "generations.jsonl", alone)
    result = CliRunner().invoke(cli, ["score", str(alone)])
    assert result.exit_code == 2, result.output
    assert "run.json" in result.stderr and not (alone / "metrics.json").exists()
