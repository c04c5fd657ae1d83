"""One writer per run folder, with real processes.

A ``probe run`` paused by a fault (SIGSTOP after its first batch, probe/store/faults.py) holds
its folder; a second ``probe run``, ``score`` or ``report`` on that folder is refused with
one line naming the holder, and the paused run then finishes with every key once. A run
SIGKILLed mid-way leaves a stale lock file that the next run takes over.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from probe.errors import ConfigError
from probe.store.runlock import LOCK_NAME, FolderBusyError, run_lock
from tests.conftest import REPO
from tests.conftest_data import bbq_cells, write_jsonl


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write_jsonl(root / "bbq" / "Age.jsonl", bbq_cells("Age", 2))
    return root


def _env(fault: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PROBE_FAULT"}
    env["OMP_NUM_THREADS"] = "1"
    if fault:
        env["PROBE_FAULT"] = fault
    return env


def _probe(*args: str) -> list[str]:
    return [sys.executable, "-m", "probe.cli", *args]


def _run_args(data: Path, out: Path) -> list[str]:
    return _probe("run", "--model", "tiny-random", "--benchmark", "bbq", "--data-dir", str(data),
                  "--condition", "baseline", "--condition", "instruct-1", "--batch-size", "2",
                  "--out", str(out))


def _call(cmd: list[str], fault: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, env=_env(fault), capture_output=True, text=True,
                          timeout=300)


def _keys(out: Path) -> list[tuple[str, str]]:
    rows = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    return [(r["item_id"], r["condition"]) for r in rows]


def _refused(done: subprocess.CompletedProcess[str], pid: int) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("probe: error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"in use by pid {pid} on " in lines[0], lines[0]
    return lines[0]


def test_second_writer_is_refused_while_the_first_holds_the_folder(data: Path,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = subprocess.Popen(_run_args(data, out), cwd=REPO, env=_env("batch-rows:1:STOP"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, status = os.waitpid(first.pid, os.WUNTRACED)  # returns once the run pauses
        assert os.WIFSTOPPED(status), status
        line = _refused(_call(_run_args(data, out)), first.pid)
        assert "`probe run`" in line and str(out) in line
        _refused(_call(_probe("score", str(out))), first.pid)
        _refused(_call(_probe("report", "--no-plots", str(out))), first.pid)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == 2 * 8  # 8 items x 2 conditions, each once
    metrics = json.loads((out / "metrics.json").read_text())
    overall = metrics["conditions"]["baseline"]["bbq"]["overall"]
    assert overall["ambig"]["n"] + overall["disambig"]["n"] == 8
    assert not (out / LOCK_NAME).exists()
    # Released on exit: the same command now resumes (nothing to do) and exits 0.
    assert _call(_run_args(data, out)).returncode == 0


def test_stale_lock_of_a_killed_run_is_taken_over(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    dead = _call(_run_args(data, out), fault="batch-rows:1")
    assert dead.returncode == -signal.SIGKILL, dead.stderr[-2000:]
    stale = json.loads((out / LOCK_NAME).read_text())
    assert stale["command"] == "run" and isinstance(stale["pid"], int)
    done = _call(_run_args(data, out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"taking over the lock left by pid {stale['pid']}" in done.stderr
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == 16
    assert not (out / LOCK_NAME).exists()


def test_lock_is_released_on_error_and_reentrant(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    with pytest.raises(ConfigError), run_lock(folder, "run"):
        with run_lock(folder, "report"):  # same process: nested use is fine
            assert (folder / LOCK_NAME).is_file()
        raise ConfigError("boom")
    assert not folder.exists()  # created by the lock, left empty: removed again
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from probe.store.runlock import run_lock\n"
         "with run_lock(sys.argv[1], 'test'):\n print('held', flush=True); time.sleep(60)",
         str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        busy = pytest.raises(FolderBusyError, match=f"pid {holder.pid} on .*`probe test`")
        with busy, run_lock(folder, "run"):
            pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(folder, "run"):  # the kernel dropped the dead holder's lock
        pass
