"""Crash-safety properties of probe.store.io: atomic writes, torn JSONL tails, streamed hashes."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probe.errors import DataError, ProbeError
from probe.store import io
from probe.store.io import (
    JsonlAppender,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
    repair_jsonl,
    sha256_file,
)

REPO = Path(__file__).resolve().parent.parent


def _lines(rows: list[dict]) -> bytes:
    return b"".join((json.dumps(r, sort_keys=True) + "\n").encode() for r in rows)


def test_atomic_json_round_trip_sorted_and_nan_free(tmp_path: Path) -> None:
    obj = {"b": [1.5, math.nan], "a": {"z": math.inf, "y": (1, 2)}}
    path = tmp_path / "sub" / "x.json"
    atomic_write_json(path, obj)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": {"y": [1, 2], "z": None}, "b": [1.5, None]}
    assert text.index('"a"') < text.index('"b"')
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temp files left


def test_failed_replace_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.json"
    atomic_write_json(path, {"v": 1})

    def boom(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "replace", boom)
    with pytest.raises(ProbeError, match=str(path)):
        atomic_write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_dir_raises_probe_error(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    atomic_write_text(path, "old")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ProbeError, match="t.txt"):
            atomic_write_text(path, "new")
    finally:
        tmp_path.chmod(0o700)
    assert path.read_text() == "old"


def test_every_truncation_reads_a_prefix_and_repairs(tmp_path: Path) -> None:
    rows = [{"i": i, "s": "é" * i} for i in range(4)]
    data = _lines(rows)
    path = tmp_path / "g.jsonl"
    for cut in range(len(data) + 1):
        path.write_bytes(data[:cut])
        got = read_jsonl(path)
        assert got == rows[: len(got)]
        complete = data[:cut].count(b"\n")  # rows whose newline made it to disk
        assert len(got) == complete
        removed = repair_jsonl(path)
        assert path.read_bytes() == _lines(rows[:complete])
        assert removed == cut - len(_lines(rows[:complete]))


def test_torn_tail_policy(tmp_path: Path) -> None:
    path = tmp_path / "g.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}')  # valid JSON, but the newline never came
    assert read_jsonl(path) == [{"a": 1}]
    assert read_jsonl(path, allow_torn_tail=False) == [{"a": 1}, {"a": 2}]
    path.write_bytes(b'{"a": 1}\n{"a": \n')
    assert read_jsonl(path) == [{"a": 1}]
    with pytest.raises(DataError):
        read_jsonl(path, allow_torn_tail=False)
    path.write_bytes(b"")
    assert read_jsonl(path) == []


def test_malformed_middle_line_names_line(tmp_path: Path) -> None:
    path = tmp_path / "g.jsonl"
    good = _lines([{"a": 1}, {"a": 2}])
    path.write_bytes(good + b"{oops\n" + _lines([{"a": 3}]))
    bad_line = good.count(b"\n") + 1
    with pytest.raises(DataError) as err:
        read_jsonl(path)
    assert err.value.line == bad_line and err.value.path == str(path)
    before = path.read_bytes()
    with pytest.raises(DataError):
        repair_jsonl(path)
    assert path.read_bytes() == before  # damage is reported, never truncated away


def test_non_object_line_is_data_error(tmp_path: Path) -> None:
    path = tmp_path / "g.jsonl"
    path.write_bytes(b'{"a": 1}\n[1, 2]\n{"a": 3}\n')
    with pytest.raises(DataError) as err:
        read_jsonl(path)
    assert err.value.line == 2


def test_appender_repairs_torn_tail_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "g.jsonl"
    path.write_bytes(_lines([{"i": 0}]) + b'{"i": 1, "x"')
    with JsonlAppender(path, fsync_every=2) as app:
        for i in (1, 2, 3):
            app.append({"i": i, "v": math.nan})
    assert read_jsonl(path, allow_torn_tail=False) == [{"i": 0}] + [
        {"i": i, "v": None} for i in (1, 2, 3)]


def test_appender_failed_write_leaves_no_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "g.jsonl"

    class HalfWriter:
        """Writes half of the data, then fails like a full disk."""

        def __init__(self, f: object) -> None:
            self.f = f

        def __getattr__(self, name: str) -> object:
            return getattr(self.f, name)

        def write(self, data: bytes) -> int:
            self.f.write(data[: len(data) // 2])  # type: ignore[attr-defined]
            raise OSError(28, "No space left on device")

    with JsonlAppender(path) as app:
        app.append({"i": 0})
        real = app._file
        app._file = HalfWriter(real)
        with pytest.raises(ProbeError, match="g.jsonl"):
            app.append({"i": 1, "pad": "x" * 100})
        app._file = real
        app.append({"i": 2})
    assert read_jsonl(path, allow_torn_tail=False) == [{"i": 0}, {"i": 2}]


def test_sigkill_mid_append_loses_no_finished_row(tmp_path: Path) -> None:
    path = tmp_path / "g.jsonl"
    code = ("import sys; from probe.store.io import JsonlAppender\n"
            "with JsonlAppender(sys.argv[1], fsync_every=1000) as a:\n"
            "    i = 0\n"
            "    while True:\n"
            "        a.append({'i': i, 'pad': 'x' * 5000}); i += 1\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=REPO)
    deadline = time.time() + 20
    while (not path.exists() or path.stat().st_size < 200_000) and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows = read_jsonl(path)
    assert len(rows) > 10
    assert [r["i"] for r in rows] == list(range(len(rows)))
    repair_jsonl(path)
    assert read_jsonl(path, allow_torn_tail=False) == rows


def test_sha256_file_streams(tmp_path: Path) -> None:
    data = os.urandom(10_001)
    path = tmp_path / "b.bin"
    path.write_bytes(data)
    assert sha256_file(path, chunk_size=7) == hashlib.sha256(data).hexdigest()


def test_unwritable_location_raises_probe_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ProbeError, match="x.json"):
        atomic_write_json(blocker / "x.json", {"a": 1})
    assert blocker.read_text() == "not a folder"
