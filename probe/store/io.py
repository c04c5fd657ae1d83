"""Crash-safe file I/O: atomic whole-file writes, append-only JSONL logs, streamed hashes.

Every file a run produces is written either whole (temp file in the same directory, fsync,
``os.replace``: a reader sees the old file or the new one, never half of either) or as an
append-only JSONL log whose only possible damage after a crash is a torn last line, which
:func:`read_jsonl` drops and :func:`repair_jsonl` truncates away.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from probe.errors import DataError, ProbeError


class StorageError(ProbeError):
    """A file could not be written (unwritable folder, disk full); names the path."""


def to_jsonable(obj: Any) -> Any:
    """Return ``obj`` with NaN/inf floats as ``None`` and tuples, paths, numpy values plain.

    JSON has no NaN; writing it anyway (Python's default) makes files that strict parsers
    refuse, so non-finite numbers become ``null``.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy/torch scalars and arrays
        return to_jsonable(obj.tolist())
    return obj


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable; not every platform lets a directory be opened, hence best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically; on failure the old file stays as it was."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically; see :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def dumps(obj: Any, *, indent: int | None = 2) -> str:
    """Canonical JSON: sorted keys, NaN/inf as ``null``, never a bare ``NaN`` token."""
    return json.dumps(to_jsonable(obj), sort_keys=True, indent=indent, allow_nan=False)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON atomically (old file kept on failure)."""
    atomic_write_text(path, dumps(obj) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing or malformed file raises :class:`DataError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError("file not found", str(path)) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"not valid JSON ({exc})", str(path)) from exc


def _parse_jsonl(data: bytes, path: Path,
                 allow_torn_tail: bool) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """Parse JSONL bytes into (line number, row) pairs and the offset where good data ends."""
    rows: list[tuple[int, dict[str, Any]]] = []
    lines = data.split(b"\n")
    good_end = 0
    for i, raw in enumerate(lines):
        line_no = i + 1
        is_last = i == len(lines) - 1  # the piece after the final newline (b"" if none)
        is_final_line = is_last or (i == len(lines) - 2 and lines[-1] == b"")
        if not raw.strip():
            good_end += len(raw) + (0 if is_last else 1)
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if allow_torn_tail and is_final_line:
                break  # torn write: the writer died mid-line
            raise DataError(f"malformed JSON line ({exc})", str(path), line_no) from exc
        if allow_torn_tail and is_last:
            break  # parses but lacks its newline: the write did not finish
        if not isinstance(row, dict):
            raise DataError(f"expected a JSON object, got {type(row).__name__}", str(path), line_no)
        rows.append((line_no, row))
        good_end += len(raw) + (0 if is_last else 1)
    return rows, good_end


def read_jsonl_numbered(path: str | Path, *,
                        allow_torn_tail: bool = True) -> list[tuple[int, dict[str, Any]]]:
    """Like :func:`read_jsonl` but each row comes with its 1-based line number."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError("file not found", str(path)) from exc
    return _parse_jsonl(data, path, allow_torn_tail)[0]


def read_jsonl(path: str | Path, *, allow_torn_tail: bool = True) -> list[dict[str, Any]]:
    """Read a JSONL file of objects; blank lines are skipped.

    With ``allow_torn_tail`` (for our own append-only logs) a last line that lacks its
    newline or is not valid JSON is a torn write and is dropped. Without it (for input
    files) every line must parse, and a missing final newline is fine. A malformed line
    anywhere else, or a line that is not an object, raises :class:`DataError` with its
    line number.
    """
    return [row for _, row in read_jsonl_numbered(path, allow_torn_tail=allow_torn_tail)]


def repair_jsonl(path: str | Path) -> int:
    """Truncate a torn last line off ``path``; return the number of bytes removed.

    A missing file is left missing (0). A malformed line before the last one raises
    :class:`DataError` and the file is not touched: that is damage, not a torn write.
    """
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    _, good_end = _parse_jsonl(data, path, allow_torn_tail=True)
    if good_end >= len(data):
        return 0
    try:
        with open(path, "r+b") as f:
            f.truncate(good_end)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise StorageError(f"cannot repair {path}: {exc.strerror or exc}") from exc
    return len(data) - good_end


class JsonlAppender:
    """Append rows to a JSONL log, one whole line per ``write`` call.

    Each row is flushed to the OS at once, so a killed process (SIGKILL, Ctrl-C) loses at
    most the line being written, and that torn line is repaired on the next open. The
    fsync, which survives a power cut, costs milliseconds on a disk, so it runs only every
    ``fsync_every`` rows and on close: a power cut may lose up to that many recent rows,
    which a resumed run simply recomputes. A failed write (disk full) is truncated back so
    it never leaves half a line in the middle of the file.
    """

    def __init__(self, path: str | Path, fsync_every: int = 16):
        self.path = Path(path)
        self.fsync_every = max(1, fsync_every)
        self._pending = 0
        self._file: Any = None

    def __enter__(self) -> JsonlAppender:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> None:
        """Repair a torn tail (else the next row would be glued onto it) and open for append."""
        repair_jsonl(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise StorageError(f"cannot open {self.path}: {exc.strerror or exc}") from exc

    def append(self, row: dict[str, Any]) -> None:
        """Write ``row`` as one line (sorted keys, NaN as null)."""
        if not isinstance(row, dict):
            raise TypeError(f"rows must be dicts, got {type(row).__name__}")
        if self._file is None:
            self.open()
        line = (dumps(row, indent=None) + "\n").encode("utf-8")
        start = self._file.tell()
        try:
            written = self._file.write(line)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
        except OSError as exc:
            with contextlib.suppress(OSError):
                self._file.truncate(start)
            raise StorageError(f"cannot append to {self.path}: {exc}") from exc
        self._pending += 1
        if self._pending >= self.fsync_every:
            self.sync()

    def sync(self) -> None:
        """fsync the rows written so far."""
        if self._file is not None and self._pending:
            os.fsync(self._file.fileno())
            self._pending = 0

    def close(self) -> None:
        """fsync and close; safe to call twice."""
        if self._file is None:
            return
        try:
            self.sync()
        finally:
            self._file.close()
            self._file = None


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large files never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
