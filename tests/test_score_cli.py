"""The ``score`` and ``data`` commands through click, on a local group."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from probe.cli import ProbeGroup
from probe.commands.data import data
from probe.commands.score import score
from probe.data.registry import default_data_dir, get_benchmark
from probe.errors import UnknownNameError
from probe.scoring.metrics import compute_metrics
from tests.conftest_data import bbq_row, write_jsonl


def _cli() -> click.Group:
    group = ProbeGroup(name="probe")
    group.add_command(score)
    group.add_command(data)
    return group


def _rows() -> list[dict]:
    base = {"benchmark": "bbq", "condition": "base", "category": "Age",
            "question_polarity": "neg", "meta": {"target_index": 0, "unknown_index": 2}}
    return [{**base, "item_id": f"bbq:Age:{i}", "context_condition": c, "label": lab, "pred": p}
            for i, (c, lab, p) in enumerate([("ambig", 2, 0), ("ambig", 2, 2), ("disambig", 0, 0),
                                             ("disambig", 1, 0), ("disambig", 1, None)])]


def test_score_run_folder_recomputes_metrics(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "run" / "generations.jsonl", _rows())
    result = CliRunner().invoke(_cli(), ["score", str(tmp_path / "run"), "--by-category"])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written == compute_metrics(_rows())
    assert "Age" in result.output and "overall" in result.output


def test_score_external_predictions(tmp_path: Path) -> None:
    lines = [{**bbq_row(example_id=i, context_condition="disambig", label=0), "guess": g}
             for i, g in enumerate(["(a)", "The grandson", "0", "no idea"])]
    path = write_jsonl(tmp_path / "preds.jsonl", lines)
    out = tmp_path / "out"
    result = CliRunner().invoke(_cli(), ["score", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert [r["pred"] for r in rows] == [0, 1, 0, None]
    assert {r["condition"] for r in rows} == {"guess"}
    cell = json.loads((out / "metrics.json").read_text())["conditions"]["guess"]["bbq"]
    assert cell["overall"]["disambig"]["accuracy"] == pytest.approx(2 / 3)
    assert cell["overall"]["disambig"]["n_unparsed"] == 1
    result = CliRunner().invoke(_cli(), ["score", str(path), "--out", str(out),
                                         "--pred-field", "guess", "--condition", "mine"])
    assert "mine" in json.loads((out / "metrics.json").read_text())["conditions"]


@pytest.mark.parametrize("content, message", [
    (None, "no such predictions file"),
    (json.dumps({**bbq_row(), "p": "(a)"}) + "\n{oops\n", "preds.jsonl:2: malformed JSON"),
    ('{"a": 1}\n', "preds.jsonl:1: line lacks BBQ fields"),
])
def test_score_errors_exit_2_without_traceback(tmp_path: Path, content: str | None,
                                               message: str) -> None:
    path = tmp_path / "preds.jsonl"
    if content is not None:
        path.write_text(content)
    result = CliRunner().invoke(_cli(), ["score", str(path)])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_data_check_and_download_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(_cli(), ["data", "check", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0 and "missing (14)" in result.output
    write_jsonl(tmp_path / "bbq" / "Age.jsonl", [bbq_row()])
    result = CliRunner().invoke(_cli(), ["data", "check", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "corrupt" in result.output
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = CliRunner().invoke(_cli(), ["data", "download", "--data-dir", str(tmp_path / "d"),
                                         "--base-url", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_default_data_dir_and_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBE_DATA_DIR", "/somewhere")
    assert default_data_dir() == Path("/somewhere")
    monkeypatch.delenv("PROBE_DATA_DIR")
    assert default_data_dir() == Path("data")
    assert get_benchmark("bbq").name == "bbq"
    with pytest.raises(UnknownNameError, match="winogender"):
        get_benchmark("nope")
