"""Data files that parse but are wrong, and files that are not text at all.

Same contract as tests/test_bad_input.py (exit 2, one ``probe: error:`` line naming the
file and line, no traceback), for: repeated BBQ items (an exact duplicate line, a reused
example_id), a row in the wrong category's file, ``stereotyped_groups`` as a string,
repeated Winogender templates, binary and non-UTF-8 files, ``probe score`` on binary or
non-run rows, and ``probe report`` on a read-only folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest_data import bbq_cells, bbq_row, write_jsonl
from tests.test_bad_input import invoke, run, user_error

BINARY = bytes(range(255, -1, -1)) * 4  # every byte value, invalid UTF-8 from the start


LATIN1 = (json.dumps(bbq_row()) + "\n" + json.dumps(bbq_row(example_id=1, context="Caf\u00e9"),
                                                  ensure_ascii=False) + "\n").encode("latin-1")


@pytest.fixture()
def data(small_data: Path) -> Path:
    return small_data


def _age(data: Path) -> Path:
    return data / "bbq" / "Age.jsonl"


def test_exactly_repeated_line_names_both_lines(data: Path, tmp_path: Path) -> None:
    lines = _age(data).read_text().splitlines()
    _age(data).write_text("\n".join([*lines, lines[1]]) + "\n")  # line 5 repeats line 2
    user_error(run(data, tmp_path / "out"), "Age.jsonl:5:", "also on line 2")
    assert not (tmp_path / "out").exists()


def test_reused_example_id_names_both_lines(data: Path, tmp_path: Path) -> None:
    rows = bbq_cells("Age", 1)
    rows[3]["example_id"] = rows[0]["example_id"]  # a different item under the same id
    write_jsonl(_age(data), rows)
    user_error(run(data, tmp_path / "out", "--cache-acts"), "Age.jsonl:4:",
               f"example_id {rows[0]['example_id']} is also on line 1")


def test_row_of_another_category(data: Path, tmp_path: Path) -> None:
    rows = bbq_cells("Age", 1)
    rows[2]["category"] = "Religion"
    write_jsonl(_age(data), rows)
    user_error(run(data, tmp_path / "out"), "Age.jsonl:3:", "'Religion'", "'Age'")


def test_stereotyped_groups_as_string(data: Path, tmp_path: Path) -> None:
    rows = bbq_cells("Age", 1)
    rows[1]["additional_metadata"]["stereotyped_groups"] = "old"
    write_jsonl(_age(data), rows)
    user_error(run(data, tmp_path / "out"), "Age.jsonl:2:", "stereotyped_groups",
               "list of strings")


def test_repeated_winogender_template(data: Path, tmp_path: Path) -> None:
    path = data / "winogender" / "templates.tsv"
    lines = path.read_text().splitlines()
    kept = next(i for i, ln in enumerate(lines) if ln.split("\t")[2] == "0")
    path.write_text("\n".join([*lines, lines[kept]]) + "\n")
    user_error(run(data, tmp_path / "out", "--benchmark", "winogender"),
               f"templates.tsv:{len(lines) + 1}:", f"also on line {kept + 1}")


@pytest.mark.parametrize(("rel", "bench", "content", "line"), [
    ("bbq/Age.jsonl", "bbq", BINARY, 1),
    ("bbq/Age.jsonl", "bbq", LATIN1, 2),
    ("winogender/templates.tsv", "winogender", BINARY, 1),
    ("winogender/templates.tsv", "winogender", b"a\tb\tc\td\nnurse\tpatient\t0\tna\xefve\n", 2),
    ("winogender/occupations-stats.tsv", "winogender", BINARY, 1),
])
def test_binary_or_non_utf8_file(data: Path, tmp_path: Path, rel: str, bench: str,
                                 content: bytes, line: int) -> None:
    (data / rel).write_bytes(content)
    user_error(run(data, tmp_path / "out", "--benchmark", bench), f"{rel}:{line}:")


def test_score_on_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "preds.jsonl"
    path.write_bytes(BINARY)
    user_error(invoke("score", str(path)), "preds.jsonl:1:", "not UTF-8")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "generations.jsonl").write_bytes(BINARY)
    user_error(invoke("score", str(run_dir)), "generations.jsonl:1:")


def test_score_on_rows_without_bbq_fields(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_jsonl(run_dir / "generations.jsonl",
                [{"item_id": "x", "condition": "baseline", "benchmark": "bbq", "pred": 0}])
    user_error(invoke("score", str(run_dir)), "generations.jsonl:1:", "lacks label")
    write_jsonl(run_dir / "generations.jsonl", [{"item_id": "x", "condition": "baseline"}])
    user_error(invoke("score", str(run_dir)), "generations.jsonl:1:", "benchmark None")
    assert not (run_dir / "metrics.json").exists()


def test_score_refuses_duplicated_rows(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(data, out).exit_code == 0
    gen = out / "generations.jsonl"
    first = gen.read_text().splitlines()[0]
    gen.write_text(gen.read_text() + first + "\n")
    n = len(gen.read_text().splitlines())
    before = (out / "metrics.json").read_bytes()
    user_error(invoke("score", str(out)), f"generations.jsonl:{n}:", "also on line 1")
    user_error(run(data, out), f"generations.jsonl:{n}:", "also on line 1")  # resume too
    assert (out / "metrics.json").read_bytes() == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_report_on_read_only_folder(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(data, out).exit_code == 0
    out.chmod(0o555)
    try:
        user_error(invoke("report", str(out)), str(out))
    finally:
        out.chmod(0o755)


def test_unwritable_file_inside_a_command_is_one_line(data: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # As root the chmod test above cannot run; a PermissionError raised where plots are
    # saved stands in for it.
    out = tmp_path / "out"
    assert run(data, out).exit_code == 0

    def denied(run_dir: Path) -> None:
        raise PermissionError(13, "Permission denied", str(run_dir / "plots" / "a.png"))

    monkeypatch.setattr("probe.api.plot_run", denied)  # what `probe report` calls
    user_error(invoke("report", str(out)), "plots/a.png", "Permission denied")
    assert not (out / ".probe.lock").exists()
