"""One writer per run folder: an exclusive lock held for the life of a command.

Two ``probe`` processes writing one folder would interleave rows (the same key appended
twice, metrics with doubled n). Every command that writes a run folder (run, score, merge,
plots, report, probes, patch, steer, lens) holds :func:`run_lock` on it; a second process
fails at once with a one-line error naming the holder.

The lock is ``flock(2)`` on ``RUN/.probe.lock``: the kernel drops it when the holding
process exits in any way (SIGKILL included), so a lock file left by a dead process is
stale by construction and the next process simply takes it over. The file records pid,
host, command and start time for the error message only; correctness rests on flock.
Within one process the lock is re-entrant (``probe report`` plots, then writes the page).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from probe.errors import ProbeError
from probe.store.io import StorageError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs still work, unguarded
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".probe.lock"
log = logging.getLogger(__name__)

# Folders this process holds: resolved path -> [open file, nesting depth].
_HELD: dict[Path, list[Any]] = {}

F = TypeVar("F", bound=Callable[..., Any])


class FolderBusyError(ProbeError):
    """Another live process holds the run folder's lock."""


def _describe(path: Path) -> str:
    """Who holds the lock, from what the holder wrote into the lock file."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return (f"pid {info['pid']} on {info['host']}, `probe {info['command']}` "
                f"since {info['started']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its details are not written yet)"


def _stale_note(handle: Any) -> str | None:
    """What a lock file we just took over says about its dead writer, if anything."""
    handle.seek(0)
    text = handle.read()
    if not text.strip():
        return None
    try:
        info = json.loads(text)
        return f"pid {info.get('pid')} on {info.get('host')}, `probe {info.get('command')}`"
    except ValueError:
        return "an unreadable lock file"


def _acquire(folder: Path, command: str) -> Any:
    """Open, flock (non-blocking) and fill in the lock file; returns the open file."""
    path = folder / LOCK_NAME
    while True:
        try:
            handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - closed in _release
        except OSError as exc:
            raise StorageError(f"cannot lock run folder {folder}: {exc.strerror or exc} "
                               f"(probe writes into it)") from exc
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise FolderBusyError(f"run folder {folder} is in use by {_describe(path)}; "
                                  f"wait for it to finish or use another --out") from None
        # The previous holder unlinks the file on release; if that happened between our
        # open and flock, we locked a deleted file: start again on the path's new file.
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    stale = _stale_note(handle)
    if stale:
        log.warning("run folder %s: taking over the lock left by %s, which is no longer "
                    "running", folder, stale)
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({
        "pid": os.getpid(), "host": socket.gethostname(), "command": command,
        "argv": sys.argv[1:],
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}) + "\n")
    handle.flush()
    return handle


def _release(folder: Path, handle: Any) -> None:
    # Unlink while still holding the lock (see the inode check in _acquire), then unlock.
    with contextlib.suppress(OSError):
        (folder / LOCK_NAME).unlink()
    handle.close()


@contextlib.contextmanager
def run_lock(folder: str | Path, command: str) -> Iterator[Path]:
    """Hold the exclusive lock of run folder ``folder`` (created if missing) for the block.

    Raises :class:`FolderBusyError` (exit 2) when another process holds it. A folder this
    call created and left empty is removed again, so a refused or failed start leaves
    nothing behind.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        from probe.errors import ConfigError

        raise ConfigError(f"--out {folder} is a file, not a folder")
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create run folder {folder}: {exc.strerror or exc}") from exc
    key = folder.resolve()
    if fcntl is None or key in _HELD:
        if key in _HELD:
            _HELD[key][1] += 1
        try:
            yield folder
        finally:
            if key in _HELD:
                _HELD[key][1] -= 1
        return
    try:
        handle = _acquire(folder, command)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    _HELD[key] = [handle, 1]
    try:
        yield folder
    finally:
        _HELD[key][1] -= 1
        if _HELD[key][1] == 0:
            del _HELD[key]
            _release(folder, handle)
            if created:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only succeeds if nothing was written


def locks_run(command: str) -> Callable[[F], F]:
    """Decorator: hold :func:`run_lock` on the function's first argument (the run folder)."""

    def wrap(func: F) -> F:
        @functools.wraps(func)
        def inner(run_dir: str | Path, *args: Any, **kwargs: Any) -> Any:
            with run_lock(run_dir, command):
                return func(run_dir, *args, **kwargs)
        return inner  # type: ignore[return-value]
    return wrap
