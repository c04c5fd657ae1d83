"""The bad-input catalogue: every way a user can feed ``probe run`` something wrong.

Each case goes through the real CLI group and must give exit code 2, exactly one
``probe: error:`` line naming the problem (file and line, or the valid names), no traceback
unless ``--debug``, and must leave what was already computed in place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from probe.cli import cli
from tests.conftest_data import bbq_cells, bbq_row, write_jsonl


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def run(data: Path, out: Path, *extra: str) -> Result:
    """``probe run`` of the tiny model on BBQ (unless ``extra`` names benchmarks)."""
    bench = [] if "--benchmark" in extra else ["--benchmark", "bbq"]
    return invoke("run", "--model", "tiny-random", "--data-dir", str(data), "--out", str(out),
                  "--condition", "baseline", *bench, *extra)


def user_error(result: Result, *needles: str) -> str:
    """Check the one-line, exit-2, no-traceback contract; return the message line."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("probe: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture()
def data(small_data: Path) -> Path:
    return small_data


def _age_lines(data: Path) -> list[str]:
    return (data / "bbq" / "Age.jsonl").read_text().splitlines()


# -- data files ----------------------------------------------------------------------------
def test_malformed_jsonl_names_file_and_line(data: Path, tmp_path: Path) -> None:
    lines = _age_lines(data)
    lines[2] = '{"example_id": 7, "context": '
    (data / "bbq" / "Age.jsonl").write_text("\n".join(lines) + "\n")
    user_error(run(data, tmp_path / "out"), "Age.jsonl:3:", "malformed")


def test_truncated_jsonl_names_last_line(data: Path, tmp_path: Path) -> None:
    text = (data / "bbq" / "Age.jsonl").read_text().rstrip("\n")
    (data / "bbq" / "Age.jsonl").write_text(text[:-30])  # cut inside the last row
    user_error(run(data, tmp_path / "out"), f"Age.jsonl:{len(_age_lines(data))}:")


@pytest.mark.parametrize(("change", "needle"), [
    ({"drop": "label"}, "missing field 'label'"),
    ({"drop": "context"}, "missing field 'context'"),
    ({"label": "2"}, "field 'label' has type str"),
    ({"example_id": 1.5}, "field 'example_id' has type float"),
    ({"answer_info": {"ans0": "x"}}, "answer_info"),
])
def test_bad_row_names_file_line_and_field(data: Path, tmp_path: Path,
                                           change: dict[str, Any], needle: str) -> None:
    rows = bbq_cells("Age", 1)
    bad = bbq_row(example_id=99)
    drop = change.pop("drop", None)
    bad.pop(drop, None) if drop else bad.update(change)
    write_jsonl(data / "bbq" / "Age.jsonl", [*rows[:1], bad, *rows[1:]])
    user_error(run(data, tmp_path / "out"), "Age.jsonl:2:", needle)


@pytest.mark.parametrize(("rel", "bench", "needle"), [
    ("bbq/Age.jsonl", "bbq", "no BBQ items"),
    ("winogender/templates.tsv", "winogender", "templates.tsv"),
    ("winogender/occupations-stats.tsv", "winogender", "occupations-stats.tsv"),
])
def test_empty_file_is_named(data: Path, tmp_path: Path, rel: str, bench: str,
                             needle: str) -> None:
    (data / rel).write_text("")
    user_error(run(data, tmp_path / "out", "--benchmark", bench), needle)


def test_some_categories_missing_runs_the_rest_and_says_so(data: Path, tmp_path: Path) -> None:
    result = run(data, tmp_path / "out", "--limit", "2")
    assert result.exit_code == 0, result.output
    assert "missing (not downloaded)" in result.output and "Religion" in result.output
    rows = [json.loads(ln) for ln in (tmp_path / "out" / "generations.jsonl").open()]
    assert rows and {r["category"] for r in rows} == {"Age"}


def test_only_missing_categories_requested(data: Path, tmp_path: Path) -> None:
    user_error(run(data, tmp_path / "out", "--category", "Religion"),
               "Religion", "probe data download")


def test_missing_data_dir_says_how_to_get_data(tmp_path: Path) -> None:
    user_error(run(tmp_path / "nowhere", tmp_path / "out"), "probe data download")
    assert not (tmp_path / "out").exists()


# -- names and options ---------------------------------------------------------------------
@pytest.mark.parametrize(("option", "value", "valid"), [
    ("--model", "no-such-model", "tiny-random"),
    ("--condition", "no-such-condition", "instruct-1"),
    ("--category", "No_such_category", "Sexual_orientation"),
    ("--benchmark", "no-such-bench", "winogender"),
])
def test_unknown_name_lists_valid_ones(data: Path, tmp_path: Path, option: str, value: str,
                                       valid: str) -> None:
    user_error(run(data, tmp_path / "out", option, value), "unknown", repr(value), valid)


@pytest.mark.parametrize("option", ["--limit", "--batch-size", "--max-new-tokens",
                                    "--reasoning-tokens"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_non_positive_numbers_refused(data: Path, tmp_path: Path, option: str,
                                      value: str) -> None:
    user_error(run(data, tmp_path / "out", option, value), option, value)
    assert not (tmp_path / "out").exists()


def test_cuda_without_gpu(data: Path, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    user_error(run(data, tmp_path / "out", "--device", "cuda"), "--device cuda", "cpu")


def test_debug_shows_the_traceback(data: Path, tmp_path: Path) -> None:
    result = invoke("--debug", "run", "--model", "no-such-model", "--benchmark", "bbq",
                    "--data-dir", str(data), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "Traceback" in result.stderr


# -- output folder -------------------------------------------------------------------------
def test_out_under_a_file(data: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    user_error(run(data, tmp_path / "file" / "run"), "file")
    user_error(run(data, tmp_path / "file"), "is a file")


class _FullDisk:
    """A file whose writes fail with ENOSPC once ``budget`` writes have gone through."""

    def __init__(self, real: Any, budget: list[int]):
        self._real, self._budget = real, budget

    def write(self, data: bytes) -> int:
        if self._budget[0] <= 0:
            import errno

            raise OSError(errno.ENOSPC, "No space left on device")
        self._budget[0] -= 1
        return int(self._real.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_full_disk_keeps_finished_rows_and_resumes(data: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    import probe.store.io

    budget = [2]  # two rows get written, the third append hits a full disk

    def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        real = builtins.open(file, mode, *args, **kwargs)  # noqa: SIM115 - caller closes
        return _FullDisk(real, budget) if "a" in mode else real

    monkeypatch.setattr(probe.store.io, "open", fake_open, raising=False)
    out = tmp_path / "out"
    user_error(run(data, out, "--batch-size", "1"), "generations.jsonl", "No space left")
    lines = (out / "generations.jsonl").read_bytes().split(b"\n")
    assert len(lines) == 3 and lines[-1] == b""  # two whole rows, no half line
    monkeypatch.undo()
    assert run(data, out, "--batch-size", "1").exit_code == 0
    clean = tmp_path / "clean"
    assert run(data, clean, "--batch-size", "1").exit_code == 0
    assert (out / "generations.jsonl").read_bytes() == (clean / "generations.jsonl").read_bytes()
    assert (out / "metrics.json").read_bytes() == (clean / "metrics.json").read_bytes()


# -- existing run folders ------------------------------------------------------------------
@pytest.fixture()
def finished(data: Path, tmp_path: Path) -> Path:
    """A finished small run with cached activations."""
    out = tmp_path / "done"
    result = run(data, out, "--cache-acts")
    assert result.exit_code == 0, result.output
    return out


def _state(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_with_another_config_lists_keys(data: Path, finished: Path) -> None:
    before = _state(finished)
    message = user_error(run(data, finished, "--cache-acts", "--seed", "3", "--limit", "2"),
                         "another config", "seed", "limit", "new --out")
    assert "3" in message
    assert _state(finished) == before


def test_other_schema_version_refused(data: Path, finished: Path) -> None:
    info = json.loads((finished / "run.json").read_text())
    info["schema_version"] = 99
    (finished / "run.json").write_text(json.dumps(info))
    before = _state(finished)
    user_error(run(data, finished, "--cache-acts"), "schema_version 99")
    assert _state(finished) == before


def _corrupt_shard(finished: Path) -> Path:
    shard = finished / "activations" / "shard-00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF  # same size, one tensor byte changed
    shard.write_bytes(bytes(data))
    return shard


def test_corrupted_shard_is_named_by_verify(finished: Path) -> None:
    from probe.activations import ActivationStore
    from probe.errors import DataError

    ActivationStore(finished / "activations").verify()
    shard = _corrupt_shard(finished)
    with pytest.raises(DataError, match=f"{shard.name}.*sha256 mismatch"):
        ActivationStore(finished / "activations").verify()


def test_resume_over_corrupted_shard_refused(data: Path, finished: Path) -> None:
    shard = _corrupt_shard(finished)
    user_error(run(data, finished, "--cache-acts"), shard.name)


# -- prompts longer than the model's context -----------------------------------------------
@pytest.fixture()
def long_run(data: Path, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A run where one BBQ row's context is far beyond tiny-random's 512 positions."""
    rows = bbq_cells("Age", 1)
    long = bbq_row(example_id=99, context="The grandfather met the grandson. " * 400)
    write_jsonl(data / "bbq" / "Age.jsonl", [*rows, long])
    out = tmp_path / "out"
    result = run(data, out, "--cache-acts")
    assert result.exit_code == 0, result.output
    rows_out = {r["item_id"]: r for r in map(json.loads, (out / "generations.jsonl").open())}
    return out, rows_out


def test_too_long_prompt_is_refused_and_counted(long_run: tuple[Path, dict[str, Any]]) -> None:
    out, rows = long_run
    row = rows["bbq:Age:99"]
    assert row["truncated"] and row["pred"] is None and row["output"] == ""
    assert row["n_prompt_tokens"] > 512
    assert not any(r["truncated"] for key, r in rows.items() if key != "bbq:Age:99")
    metrics = json.loads((out / "metrics.json").read_text())
    cell = metrics["conditions"]["baseline"]["bbq"]["overall"]["ambig"]
    ambig = [r for r in rows.values() if r["context_condition"] == "ambig"]
    assert cell["n"] == len(ambig) - 1 and cell["n_unparsed"] == 1  # never scored
    from probe.activations import ActivationStore

    assert ("bbq:Age:99", "baseline") not in ActivationStore(out / "activations").key_to_row()


def test_metrics_report_truncated_count(long_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = long_run
    assert "n_truncated" in (out / "metrics.json").read_text()


def test_rerun_with_a_refused_row_changes_nothing(data: Path,
                                                  long_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = long_run
    before = {k: v for k, v in _state(out).items() if k != "run.json"}
    assert run(data, out, "--cache-acts").exit_code == 0
    assert {k: v for k, v in _state(out).items() if k != "run.json"} == before
