"""Re-scoring re-reads answers from the model's stored evidence, never from a stored pred.

Properties: on a fresh run the re-read answers equal the run's own (every mode, counterbalanced
rows included); with every stored pred erased, ``probe score`` restores the run's rows and
metrics byte for byte; a parser rule applied to old output text reaches the metrics.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from probe.cli import cli
from probe.config import RunConfig
from probe.engine.study import run_study
from probe.scoring.repredict import answer_of, repredict
from probe.store.io import read_jsonl

MODES = {"text": {}, "letter": {"counterbalance": True}, "generate": {"max_new_tokens": 4}}


@pytest.fixture(scope="module", params=sorted(MODES))
def finished(request, tiny, data_dir, tmp_path_factory, one_thread) -> Path:
    mode = request.param
    cfg = RunConfig(model="tiny-random", categories=["Age"], limit=4, mode=mode,
                    conditions=["baseline", "instruct-1"], data_dir=str(data_dir),
                    **MODES[mode])
    return run_study(cfg, tmp_path_factory.mktemp(f"repredict-{mode}") / "run",
                     loaded=tiny).folder.path


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "copy"))


def test_rereading_a_fresh_run_changes_nothing(finished):
    rows = read_jsonl(finished / "generations.jsonl")
    assert rows and all(r.get("options") for r in rows)
    assert repredict(rows).changed == []
    if rows[0]["mode"] == "letter":  # the counterbalanced evidence is what was re-read
        assert all("counterbalance" in r["meta"] for r in rows if r["benchmark"] == "bbq")


def test_score_restores_erased_answers_byte_for_byte(finished, tmp_path):
    folder = _copy(finished, tmp_path)
    gens, metrics = folder / "generations.jsonl", folder / "metrics.json"
    before_rows, before_metrics = gens.read_bytes(), metrics.read_bytes()
    rows = read_jsonl(gens)
    erased = [{**r, "pred": None if r["pred"] is not None else 0} for r in rows]
    gens.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in erased))
    metrics.unlink()
    result = CliRunner().invoke(cli, ["score", str(folder)])
    assert result.exit_code == 0, result.output
    assert f"re-read {len(rows)} answers" in result.output
    assert metrics.read_bytes() == before_metrics
    assert gens.read_bytes() == before_rows


def _unknown_row(folder: Path) -> tuple[list[dict], int]:
    rows = read_jsonl(folder / "generations.jsonl")
    i = next(i for i, r in enumerate(rows) if r["benchmark"] == "bbq"
             and r["context_condition"] == "ambig")
    return rows, i


def test_a_new_parser_rule_reaches_old_output_text(finished, tmp_path):
    """An answer the old parser left unparsed ("It is not possible to tell.") is re-read as
    BBQ's unknown option by ``probe score``, and the metrics count it."""
    if read_jsonl(finished / "generations.jsonl")[0]["mode"] != "generate":
        pytest.skip("generate mode only")
    folder = _copy(finished, tmp_path)
    rows, i = _unknown_row(folder)
    rows[i] = {**rows[i], "output": " It is not possible to tell.", "pred": None}
    (folder / "generations.jsonl").write_text(
        "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    assert answer_of(rows[i]) == rows[i]["meta"]["unknown_index"]
    result = CliRunner().invoke(cli, ["score", str(folder)])
    assert result.exit_code == 0, result.output
    stored = read_jsonl(folder / "generations.jsonl")[i]
    assert stored["pred"] == rows[i]["meta"]["unknown_index"]


def test_rows_without_options_are_refused(finished, tmp_path):
    folder = _copy(finished, tmp_path)
    rows = read_jsonl(folder / "generations.jsonl")
    rows[0] = {k: v for k, v in rows[0].items() if k != "options"}
    (folder / "generations.jsonl").write_text(
        "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    result = CliRunner().invoke(cli, ["score", str(folder)])
    assert result.exit_code == 2, result.output
    assert "options" in result.stderr and rows[0]["item_id"] in result.stderr
