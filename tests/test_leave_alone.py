"""probe leaves the user's repository and network alone.

Provenance reads ``git status`` without taking ``.git/index.lock`` (the user's own git
commands could otherwise collide with it): the index file is never rewritten. A hub model
id that is neither cached nor reachable fails at once with one line, not a minute of
retry warnings.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from probe.errors import ProbeError
from probe.store import provenance as prov
from tests.conftest import REPO


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_git_status_never_rewrites_the_index(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("a\n")
    _git(repo, "add", "a.txt")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a")
    # Same content, new mtime: a plain `git status` refreshes the index and writes it back
    # (through .git/index.lock); the no-lock mode must leave it as it is.
    os.utime(repo / "a.txt", ns=(10**18, 10**18))
    index = repo / ".git" / "index"
    before = (index.stat().st_ino, index.stat().st_mtime_ns, index.read_bytes())
    info = prov.git_info(repo)
    assert info["commit"] and info["dirty"] is False
    assert (index.stat().st_ino, index.stat().st_mtime_ns, index.read_bytes()) == before
    subprocess.run(["git", "-C", str(repo), "status"], check=True, capture_output=True)
    assert index.read_bytes() != before[2], "control: a plain git status does rewrite it"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_hub_fails_at_once_in_one_line(tmp_path: Path, data_dir: Path) -> None:
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}",
           "HF_HOME": str(tmp_path / "hf")}  # an empty cache
    env.pop("HF_HUB_OFFLINE", None)
    done = subprocess.run(
        [sys.executable, "-m", "probe.cli", "run", "--model", "nosuch-org/nosuch-model",
         "--benchmark", "bbq", "--limit", "1", "--data-dir", str(data_dir),
         "--out", str(tmp_path / "out")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, done.stderr[-3000:]
    assert "nosuch-org/nosuch-model" in lines[0] and "unreachable" in lines[0]
    assert not (tmp_path / "out").exists()


def test_offline_mode_needs_no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from probe.engine.hub import check_hub_reachable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("network"))
    with pytest.raises(ProbeError, match="HF_HUB_OFFLINE is set"):
        check_hub_reachable("nosuch-org/nosuch-model")
