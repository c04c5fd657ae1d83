"""Write activation rows to sha256-indexed safetensors shards, resumably."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from safetensors.torch import save

from probe.activations.layout import (
    DTYPES,
    INDEX,
    SCHEMA_VERSION,
    SHARD_RE,
    Key,
    default_positions,
    index_positions,
    key_of,
    shard_name,
)
from probe.errors import ConfigError, DataError, UnknownNameError
from probe.store.io import (
    atomic_write_bytes,
    atomic_write_json,
    dumps,
    read_json,
    sha256_file,
    to_jsonable,
)

log = logging.getLogger(__name__)


class ShardWriter:
    """Append activations to ``acts_dir`` in shards, holding at most ``rows_per_shard`` rows.

    Opening a writer on a folder with an index resumes after its last complete shard and
    deletes shard files the index does not list (torn writes). See the module docstring
    for how the generation stage must use :meth:`written_keys` on resume.

    With ``background``, a full shard is serialised, hashed and written by one worker
    thread while the caller goes on (on a GPU, the next batch runs instead of waiting for
    the disk); at most one shard is in flight, so memory holds at most two shards' rows.
    A failed write is raised by the next :meth:`add`, :meth:`flush` or :meth:`close`.
    """

    def __init__(self, acts_dir: str | Path, hook_names: list[str], n_positions: int,
                 d_model: int, dtype: str = "float16", rows_per_shard: int = 256,
                 positions: list[int] | None = None, background: bool = False):
        if dtype not in DTYPES:
            raise UnknownNameError("activation dtype", dtype, DTYPES)
        if not hook_names or len(set(hook_names)) != len(hook_names):
            raise ConfigError(f"hook names must be non-empty and distinct: {hook_names}")
        if min(n_positions, d_model, rows_per_shard) < 1:
            raise ConfigError("n_positions, d_model and rows_per_shard must be >= 1")
        self.acts_dir = Path(acts_dir)
        self.hook_names = list(hook_names)
        self.n_positions, self.d_model, self.dtype = n_positions, d_model, dtype
        self.positions = default_positions(n_positions) if positions is None else positions
        if len(self.positions) != n_positions or len(set(self.positions)) != n_positions:
            raise ConfigError(f"positions {self.positions} must be {n_positions} distinct labels")
        self.rows_per_shard = rows_per_shard
        self._shards: list[dict[str, Any]] = []
        self._rows: list[dict[str, Any]] = []
        self._written: set[Key] = set()
        self._buffer: dict[str, list[torch.Tensor]] = {h: [] for h in self.hook_names}
        self._buffer_meta: list[dict[str, Any]] = []
        self.max_buffered_rows = 0  # high-water mark, for tests of the memory bound
        self._warned_overflow = False
        self._lock = threading.Lock()  # guards the written state the worker updates
        self._pool = ThreadPoolExecutor(1, "shard-writer") if background else None
        self._pending: Future[None] | None = None
        self.acts_dir.mkdir(parents=True, exist_ok=True)
        self._resume()
        self._accepted = set(self._written)  # every key written, in flight or buffered

    # -- resume --------------------------------------------------------------------------
    def _header(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "hook_names": self.hook_names,
                "n_positions": self.n_positions, "positions": self.positions,
                "d_model": self.d_model, "dtype": self.dtype}

    def _resume(self) -> None:
        """Load an existing index (checking it matches) and delete unindexed shard files."""
        index_path = self.acts_dir / INDEX
        if index_path.exists():
            index = read_json(index_path)
            if not isinstance(index, dict) or not {"shards", "rows"} <= set(index):
                raise DataError("activation index is corrupt", str(index_path))
            mine, theirs = self._header(), {k: index.get(k) for k in self._header()}
            theirs["positions"] = index_positions(index)
            # Tensors are keyed by hook name, so only the set of hooks has to match.
            mine["hook_names"] = sorted(self.hook_names)
            theirs["hook_names"] = sorted(theirs["hook_names"] or [])
            diff = [f"{k}: {theirs[k]!r} -> {mine[k]!r}" for k in mine if mine[k] != theirs[k]]
            if diff:
                raise ConfigError(f"activations in {self.acts_dir} were written with other "
                                  f"settings: {'; '.join(diff)}; use a new --out")
            self._shards, self._rows = list(index["shards"]), list(index["rows"])
            for shard in self._shards:
                path = self.acts_dir / shard["file"]
                if not path.is_file() or path.stat().st_size != shard["n_bytes"]:
                    raise DataError("indexed shard is missing or truncated", str(path))
                # A resumed run must never build on a shard whose bytes changed.
                if sha256_file(path) != shard["sha256"]:
                    raise DataError("indexed shard is corrupted (sha256 mismatch); use a new "
                                    "--out", str(path))
            self._written = {key_of(r) for r in self._rows}
        listed = {s["file"] for s in self._shards}
        for path in self.acts_dir.iterdir():
            torn = SHARD_RE.match(path.name) and path.name not in listed
            temp = path.name.startswith((".shard-", f".{INDEX}.")) and path.name.endswith(".tmp")
            if torn or temp:
                log.info("removing unfinished activation file %s", path)
                path.unlink()

    def written_keys(self) -> set[Key]:
        """(item_id, condition) of rows in complete, indexed shards (not the buffer)."""
        with self._lock:
            return set(self._written)

    @property
    def buffered_rows(self) -> int:
        """Rows held in memory, waiting for their shard."""
        return len(self._buffer_meta)

    # -- adding --------------------------------------------------------------------------
    def _check_batch(self, meta_rows: Sequence[dict[str, Any]],
                     acts: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """Validate a batch; return JSON-safe copies of its meta rows."""
        if set(acts) != set(self.hook_names):
            raise ValueError(f"acts has hooks {sorted(acts)}, expected {sorted(self.hook_names)}")
        shape = (len(meta_rows), self.n_positions, self.d_model)
        for hook, tensor in acts.items():
            if tuple(tensor.shape) != shape:
                raise ValueError(f"acts[{hook!r}] has shape {tuple(tensor.shape)}, want {shape}")
        seen = set(self._accepted)
        clean = []
        for meta in meta_rows:
            missing = {"item_id", "condition", "positions"} - set(meta)
            if missing:
                raise ValueError(f"meta row lacks {sorted(missing)}: {meta}")
            if list(meta["positions"]) != self.positions:
                raise ValueError(f"meta row has positions {meta['positions']}, "
                                 f"want {self.positions}")
            if key_of(meta) in seen:
                raise ValueError(f"activations for {key_of(meta)} are already stored")
            seen.add(key_of(meta))
            dumps(meta)  # fail now, not at flush time, on values JSON cannot hold
            clean.append(to_jsonable(meta))
        return clean

    def _to_cpu(self, tensor: torch.Tensor) -> torch.Tensor:
        """An owned CPU copy in the storage dtype (a view would pin the caller's batch)."""
        out = tensor.detach().to(device="cpu", dtype=DTYPES[self.dtype], copy=True)
        if not self._warned_overflow and not bool(torch.isfinite(out).all()):
            self._warned_overflow = True
            log.warning("non-finite activations after casting to %s; consider float32 or "
                        "bfloat16", self.dtype)
        return out

    def add(self, meta_rows: Sequence[dict[str, Any]], acts: dict[str, torch.Tensor]) -> None:
        """Buffer a batch; ``acts[hook]`` is (batch, n_positions, d_model) on any device.

        Each full ``rows_per_shard`` rows are written out at once, so a batch may span
        shards and the buffer never holds more than ``rows_per_shard`` rows.
        """
        self._raise_failed_write()
        clean = self._check_batch(meta_rows, acts)
        self._accepted.update(key_of(m) for m in clean)
        start = 0
        while start < len(clean):
            take = min(len(clean) - start, self.rows_per_shard - len(self._buffer_meta))
            for hook in self.hook_names:
                self._buffer[hook].append(self._to_cpu(acts[hook][start:start + take]))
            self._buffer_meta.extend(clean[start:start + take])
            self.max_buffered_rows = max(self.max_buffered_rows, len(self._buffer_meta))
            start += take
            if len(self._buffer_meta) >= self.rows_per_shard:
                self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one shard, then the index; no-op if the buffer is empty.

        In background mode the write is handed to the worker (after the previous one has
        finished, so shards and index entries stay in order) and this returns at once.
        """
        if not self._buffer_meta:
            self._raise_failed_write()
            return
        buffer, metas = self._buffer, self._buffer_meta
        self._buffer, self._buffer_meta = {h: [] for h in self.hook_names}, []
        self.drain()
        if self._pool is None:
            self._write(buffer, metas)
        else:
            self._pending = self._pool.submit(self._write, buffer, metas)

    def drain(self) -> None:
        """Wait for the shard in flight (if any); re-raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _raise_failed_write(self) -> None:
        if self._pending is not None and self._pending.done():
            self.drain()

    def _write(self, buffer: dict[str, list[torch.Tensor]], metas: list[dict[str, Any]]) -> None:
        """Serialise, hash and write one shard, then the index that lists it."""
        first, n_rows = len(self._rows), len(metas)
        tensors = {h: torch.cat(buffer[h]).contiguous() for h in self.hook_names}
        # One metadata key: safetensors orders several keys arbitrarily, and identical rows
        # should give byte-identical shards (same sha256) however the run was interrupted.
        where = json.dumps({"first_row": first, "n_rows": n_rows}, sort_keys=True)
        data = save(tensors, metadata={"probe": where})
        del tensors
        shard: dict[str, Any] = {
            "file": shard_name(len(self._shards)), "sha256": hashlib.sha256(data).hexdigest(),
            "n_rows": n_rows, "first_row": first, "n_bytes": len(data)}
        path = self.acts_dir / shard["file"]
        atomic_write_bytes(path, data)
        rows = [{**meta, "row": first + i} for i, meta in enumerate(metas)]
        try:
            atomic_write_json(self.acts_dir / INDEX, {
                **self._header(), "rows_per_shard": self.rows_per_shard,
                "shards": [*self._shards, shard], "rows": [*self._rows, *rows]})
        except BaseException:
            path.unlink(missing_ok=True)  # unindexed: would be deleted on resume anyway
            raise
        with self._lock:
            self._shards.append(shard)
            self._rows.extend(rows)
            self._written.update(key_of(r) for r in rows)

    def close(self) -> None:
        """Write the last, partial shard and wait for every write to finish."""
        try:
            self.flush()
            self.drain()
        finally:
            if self._pool is not None:  # later writes, if any, are synchronous
                self._pool.shutdown(wait=True)
                self._pool = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # Buffered rows are whole rows even when the pipeline failed mid-way: keep them.
        self.close()


