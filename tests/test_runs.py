"""Run folders (create, resume, refuse) and provenance records."""

from __future__ import annotations

import hashlib
import json
import math
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from probe.errors import ConfigError, DataError, UnknownNameError
from probe.store import provenance as prov
from probe.store.io import JsonlAppender, read_json
from probe.store.run_schema import SCHEMA_VERSION
from probe.store.runs import RunFolder

MODEL: dict[str, Any] = {"name": "tiny", "dtype": "float32"}
CONFIG: dict[str, Any] = {"model": MODEL, "conditions": ["baseline", "cot"], "seed": 0,
                          "batch_size": 8, "device": "cpu"}
PROV = {"git": {"commit": "abc"}}


def _make(tmp_path: Path, config: dict | None = None) -> RunFolder:
    return RunFolder.create_or_resume(tmp_path / "run", config or CONFIG, PROV)


def test_new_folder_writes_run_json(tmp_path: Path) -> None:
    run = _make(tmp_path)
    info = read_json(run.run_json)
    assert info["schema_version"] == SCHEMA_VERSION
    assert info["config"] == CONFIG and info["provenance"] == PROV and info["created"]
    assert run.generations.name == "generations.jsonl" and run.acts_dir.name == "activations"
    assert run.path_for("probes") == run.path_for("probes.json") == run.path / "probes.json"
    with pytest.raises(UnknownNameError):
        run.path_for("nope")


def test_resume_same_config_and_ignored_keys(tmp_path: Path) -> None:
    _make(tmp_path)
    again = _make(tmp_path, {**CONFIG, "batch_size": 2, "model": {**MODEL,
                                                                 "device": "cuda"}})
    assert again.config == CONFIG  # the stored config stays the one results were made with
    changed = read_json(again.run_json)["resumes"][-1]["changed"]
    assert set(changed) == {"batch_size", "model.device"}


def test_config_mismatch_lists_only_differing_keys(tmp_path: Path) -> None:
    with _make(tmp_path).appender() as app:  # a folder with results keeps its config
        app.append({"item_id": "a", "condition": "baseline"})
    other = {**CONFIG, "seed": 1, "model": {**MODEL, "name": "big"}}
    with pytest.raises(ConfigError) as err:
        _make(tmp_path, other)
    msg = str(err.value)
    assert "key seed: 0 -> 1" in msg and "key model.name: 'tiny' -> 'big'" in msg
    assert "conditions" not in msg and "new --out" in msg
    assert read_json(tmp_path / "run" / "run.json")["config"] == CONFIG


def test_tuple_equals_stored_list(tmp_path: Path) -> None:
    _make(tmp_path)
    _make(tmp_path, {**CONFIG, "conditions": ("baseline", "cot")})


def test_schema_mismatch_refused(tmp_path: Path) -> None:
    run = _make(tmp_path)
    info = read_json(run.run_json)
    info["schema_version"] = SCHEMA_VERSION + 1
    run.run_json.write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="schema_version"):
        _make(tmp_path)
    with pytest.raises(ConfigError, match="schema_version"):
        RunFolder.open(run.path)


def test_foreign_or_corrupt_folder_refused(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="no run.json"):
        _make(tmp_path)
    (tmp_path / "run" / "run.json").write_text('{"schema_version": 1, "conf')
    with pytest.raises(ConfigError, match="corrupt"):
        _make(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        RunFolder.open(tmp_path / "missing")


def test_empty_existing_folder_is_new(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    assert _make(tmp_path).config == CONFIG


def test_done_keys_repairs_tail_and_refuses_duplicates(tmp_path: Path) -> None:
    run = _make(tmp_path)
    rows = [{"item_id": "a", "condition": "baseline", "output": "first"},
            {"item_id": "b", "condition": "baseline", "output": "x"}]
    with run.appender() as app:
        for row in rows:
            app.append(row)
    with open(run.generations, "ab") as f:
        f.write(b'{"item_id": "c", "cond')  # killed mid-write
    assert run.done_keys() == {("a", "baseline"), ("b", "baseline")}
    assert run.generations.read_bytes().endswith(b"\n")
    assert [r["output"] for r in run.rows()] == ["first", "x"]
    # A key written twice (two writers) is an error naming both lines, never a silent pick.
    with run.appender() as app:
        app.append({"item_id": "a", "condition": "baseline", "output": "second"})
    with pytest.raises(DataError, match=r"generations\.jsonl:3: row \('a', 'baseline'\) is "
                                        r"also on line 1"):
        run.done_keys()
    with pytest.raises(DataError, match="also on line 1"):
        run.rows()


def test_metrics_and_stages_persist(tmp_path: Path) -> None:
    run = _make(tmp_path)
    run.write_metrics({"acc": math.nan, "n": 3})
    assert run.read_metrics() == {"acc": None, "n": 3}
    assert not run.stage_done("score")
    run.mark_stage_done("score", n_rows=3)
    reopened = RunFolder.open(run.path)
    assert reopened.stage_done("score") and not reopened.stage_done("probes")
    assert reopened.info["stages"]["score"]["n_rows"] == 3


def test_appender_on_fresh_run(tmp_path: Path) -> None:
    run = _make(tmp_path)
    with JsonlAppender(run.generations) as app:
        app.append({"item_id": "x", "condition": "cot"})
    assert run.done_keys() == {("x", "cot")}


def test_provenance_fields_and_file_hashes(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"hello\n")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "w.bin").write_bytes(b"weights")
    record = prov.provenance({"data": data, "model": model_dir})
    assert record["files"]["data"]["sha256"] == hashlib.sha256(b"hello\n").hexdigest()
    assert set(record["packages"]) >= {"probe", "torch", "numpy", "sklearn", "python"}
    assert record["packages"]["torch"] is not None
    host = socket.gethostname()
    text = json.dumps(record)
    if len(host) > 3 and host not in record["platform"]["platform"]:
        assert host not in text
    (model_dir / "w.bin").write_bytes(b"weights2")
    assert prov.provenance({"model": model_dir})["files"]["model"]["sha256"] != \
        record["files"]["model"]["sha256"]


def test_hash_cache_keyed_by_size_and_mtime(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"a" * 100)
    calls: list[Path] = []
    real = prov.sha256_file

    def counting(p: Path) -> str:
        calls.append(p)
        return real(p)

    monkeypatch.setattr(prov, "sha256_file", counting)
    first = prov.cached_sha256(path)
    assert prov.cached_sha256(path) == first and len(calls) == 1
    path.write_bytes(b"b" * 101)
    assert prov.cached_sha256(path) == hashlib.sha256(b"b" * 101).hexdigest()
    assert len(calls) == 2


def test_git_absent_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_git(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert prov.git_info() == {"commit": None, "dirty": None}
    assert prov.provenance()["git"] == {"commit": None, "dirty": None}


def test_git_commit_of_this_repo() -> None:
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout or git missing")
    info = prov.git_info()
    assert info["commit"] == head and isinstance(info["dirty"], bool)


def test_resume_refused_when_data_file_changed(tmp_path):
    """Same config, other data: rows from two data versions must never be mixed."""
    prov = {"files": {"bbq/Age.jsonl": {"sha256": "aa", "size": 1}}}
    RunFolder.create_or_resume(tmp_path / "run", {"seed": 0, "data_dir": "a"}, prov)
    RunFolder.create_or_resume(tmp_path / "run", {"seed": 0, "data_dir": "./a"}, prov)
    changed = {"files": {"bbq/Age.jsonl": {"sha256": "bb", "size": 1}}}
    with pytest.raises(ConfigError, match="bbq/Age.jsonl"):
        RunFolder.create_or_resume(tmp_path / "run", {"seed": 0, "data_dir": "a"}, changed)


def test_resume_removes_interrupted_atomic_writes(tmp_path: Path) -> None:
    run = _make(tmp_path)
    run.write_metrics({"a": 1})
    leftover = run.path / ".metrics.json.k2j3h4.tmp"  # what a kill mid-write leaves
    leftover.write_text('{"a": ')
    keep = run.path / "notes.tmp"  # not ours: not dot-prefixed
    keep.write_text("mine")
    _make(tmp_path)
    assert not leftover.exists() and keep.exists()
    assert read_json(run.path / "metrics.json") == {"a": 1}
