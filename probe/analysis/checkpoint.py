"""Resumable analyses: partial results of ``probe patch|steer|lens`` kept per unit.

An analysis (patching a batch of item pairs, steering one (layer, kind, alpha), the lens of
one condition) appends each finished unit as one line to
``RUN/<name>.partial.jsonl``. A killed command rerun with the same options reads those lines
back, skips the units they hold and computes only the rest; the final JSON is then the same
as an uninterrupted run's (everything but its ``seconds``), because every unit's numbers are
stored exactly (arrays as their float64 bytes) and the units are the same batches in the same
order. The file is deleted once the final JSON is written.

Each line is appended and flushed whole (:class:`probe.store.io.JsonlAppender`): a kill leaves at
most a torn last line, which is dropped on the next open, so a unit is in the file entirely or
not at all. The first line records the options (and a fingerprint of the run's rows); a
partial file written under other options is refused with a one-line error naming the option,
rather than mixed in. The caller holds the run folder's lock (:mod:`probe.store.runlock`) for the
whole analysis, so no second process appends to the same file.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

from probe.errors import ConfigError
from probe.store import faults
from probe.store.io import JsonlAppender, dumps, read_jsonl, sha256_file

T = TypeVar("T")
R = TypeVar("R")
FAULT_POINT = "analysis-unit"  # probe/store/faults.py: a unit's line was appended


def pack_arrays(arrays: Sequence[np.ndarray]) -> dict[str, Any]:
    """Same-shape arrays as JSON holding their exact float64 bytes (JSON decimals would not
    round-trip NaN, and a reader must not have to trust float printing)."""
    stacked = np.ascontiguousarray(np.stack([np.asarray(a, dtype=np.float64) for a in arrays]))
    return {"shape": list(stacked.shape), "f8": base64.b64encode(stacked.tobytes()).decode()}


def unpack_arrays(packed: dict[str, Any]) -> list[np.ndarray]:
    """Inverse of :func:`pack_arrays`."""
    flat = np.frombuffer(base64.b64decode(packed["f8"]), dtype=np.float64)
    return list(flat.reshape(packed["shape"]).copy())


def run_fingerprint(run_dir: str | Path) -> str | None:
    """sha256 of the run's generations.jsonl: a rescored run invalidates partial results."""
    path = Path(run_dir) / "generations.jsonl"
    return sha256_file(path) if path.exists() else None


def digest(value: Any) -> str:
    """Short sha256 of ``value``'s repr: a long option (a patch plan) compared as one string."""
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]


class Checkpoint:
    """Partial results of analysis ``name`` in ``run_dir`` under ``options``.

    ``options`` maps the user's option names (``"--limit"``) to JSON-able values; they must
    equal those of an existing partial file. ``progress`` shows a tqdm bar per stage.
    """

    def __init__(self, run_dir: str | Path, name: str, options: dict[str, Any],
                 progress: bool = True):
        self.path = Path(run_dir) / f"{name}.partial.jsonl"
        self.progress = progress
        self.options = {k: _plain(v) for k, v in options.items()}
        self.done: dict[str, Any] = {}
        if self.path.exists():
            self._load()
        self._out = JsonlAppender(self.path, fsync_every=1)
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._out.append({"options": self.options})

    def _load(self) -> None:
        lines = read_jsonl(self.path)  # a torn last line (the kill) is dropped
        if not lines:
            return
        old = lines[0].get("options", {})
        for key in sorted(set(old) | set(self.options)):
            if old.get(key) != self.options.get(key):
                raise ConfigError(
                    f"{self.path}: partial results were computed with {key} "
                    f"{old.get(key)!r}, not {self.options.get(key)!r}; rerun with the same "
                    f"options to resume, or delete the file to start over")
        self.done = {line["key"]: line["value"] for line in lines[1:]}

    def get(self, key: str) -> Any | None:
        """The stored value of unit ``key``, or None if it is not done yet."""
        return self.done.get(key)

    def put(self, key: str, value: Any) -> None:
        """Record unit ``key`` as done with ``value`` (JSON-able; arrays via pack_arrays)."""
        self.done[key] = value
        self._out.append({"key": key, "value": value})
        faults.point(FAULT_POINT)

    def unit(self, key: str, compute: Callable[[], Any]) -> Any:
        """The stored value of ``key``, else ``compute()``'s, stored before it is returned."""
        if key not in self.done:
            self.put(key, _plain(compute()))
        return self.done[key]

    def batches(self, fn: Callable[[list[T]], list[np.ndarray]], key_of: Callable[[T], str],
                total: int, desc: str) -> Callable[[list[T]], list[np.ndarray]]:
        """Wrap a batch function for :meth:`probe.engine.inference.Engine.map_batches`: a batch
        already done (same members, hence the same padded forward pass) is read back."""
        bar = self.bar(total, desc)

        def run(batch: list[T]) -> list[np.ndarray]:
            key = "|".join(key_of(x) for x in batch)
            if key not in self.done:
                self.put(key, pack_arrays(fn(batch)))
            bar.update(len(batch))
            if bar.n >= total:
                bar.close()
            return unpack_arrays(self.done[key])
        return run

    def bar(self, total: int, desc: str) -> tqdm:
        """A progress bar for ``total`` units of one stage (on stderr, as ``probe run``'s)."""
        return tqdm(total=total, desc=desc, disable=not self.progress, leave=False)

    def finish(self) -> None:
        """The final JSON is written: drop the partial file."""
        self._out.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def close(self) -> None:
        """Stop appending (an error ends the analysis); the partial file stays for a rerun."""
        self._out.close()


def _plain(value: Any) -> Any:
    """JSON's view of ``value`` (tuples as lists...), so that options compare as stored."""
    return json.loads(dumps(value, indent=None))
