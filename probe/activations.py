"""Streaming activation shards: residual-stream vectors per generation row, on disk.

A row is one (item_id, condition) pair; for each hook (TransformerLens names such as
``hook_embed`` or ``blocks.3.hook_resid_post``) it holds the vectors at labelled positions
(the index's ``positions``): the last k prompt tokens aligned from the end (-1 is the last
prompt token), then, in runs with ``--cache-steps``, generated tokens 0, 1, ... (each row's
``n_steps`` says how many are real; the rest are zeros). Rows are buffered and
written ``rows_per_shard`` at a time as ``shard-00000.safetensors`` files, each written
atomically and then listed with its sha256 in ``index.json`` (rewritten atomically). A shard
is therefore either complete and indexed, or unindexed and deleted on resume.

Contract with the generation stage (``generations.jsonl``). Activations sit in memory until
their shard is written, so after a crash generations.jsonl may hold rows whose activations
were lost, and (if the crash fell between a shard write and the row append) a shard may
hold rows that generations.jsonl lacks. On resume the pipeline must therefore decide per key
with both sets, never from generations.jsonl alone::

    done = run.done_keys()                 # rows already in generations.jsonl
    writer = ShardWriter(run.acts_dir, ...)
    have = writer.written_keys()           # activations already in complete shards
    for key in keys:
        need_row = key not in done         # generate and append the row
        need_acts = key not in have        # run the forward pass and writer.add(...)

A key in ``done - have`` needs only its activations recomputed (from the stored prompt);
a key in ``have - done`` needs only its row. :meth:`ShardWriter.add` refuses a key that is
already written, so a resumed run can never store a row's activations twice.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from probe.errors import ConfigError, DataError, UnknownNameError
from probe.io import (
    atomic_write_bytes,
    atomic_write_json,
    dumps,
    read_json,
    sha256_file,
    to_jsonable,
)

SCHEMA_VERSION = 1
INDEX = "index.json"
DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
}
_SHARD_RE = re.compile(r"^shard-\d{5,}\.safetensors$")
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")
log = logging.getLogger(__name__)

Key = tuple[str, str]


def shard_name(index: int) -> str:
    """File name of the ``index``-th shard."""
    return f"shard-{index:05d}.safetensors"


def layer_of(hook_name: str) -> int | None:
    """Layer of a hook: ``blocks.L.*`` -> L; embedding hooks (``hook_embed``...) -> -1.

    -1 means "the residual stream before block 0", so ``blocks.L.hook_resid_post`` at L
    and the embedding at -1 line up as "after layer L". Other hooks (``ln_final.*``) have
    no layer and give ``None``. Note ``blocks.L.hook_resid_pre`` is L, i.e. equals L-1's post.
    """
    match = _BLOCK_RE.match(hook_name)
    if match:
        return int(match.group(1))
    return -1 if "embed" in hook_name else None


def default_positions(n_positions: int) -> list[int]:
    """The last ``n`` prompt tokens, labelled from the end: ``[-n, ..., -1]``."""
    return list(range(-n_positions, 0))


def index_positions(index: dict[str, Any]) -> list[int]:
    """Position labels of an index (older indexes list none: the last-k default)."""
    return list(index.get("positions") or default_positions(index["n_positions"]))


def describe_positions(positions: list[int]) -> str:
    """``-2..-1 (prompt), 0..3 (generated)`` for humans."""
    prompt, gen = [p for p in positions if p < 0], [p for p in positions if p >= 0]
    parts = [f"{min(prompt)}..{max(prompt)} (prompt)"] if prompt else []
    parts += [f"{min(gen)}..{max(gen)} (generated tokens)"] if gen else []
    return ", ".join(parts)


def _key(meta: dict[str, Any]) -> Key:
    return (str(meta["item_id"]), str(meta["condition"]))


class ShardWriter:
    """Append activations to ``acts_dir`` in shards, holding at most ``rows_per_shard`` rows.

    Opening a writer on a folder with an index resumes after its last complete shard and
    deletes shard files the index does not list (torn writes). See the module docstring
    for how the generation stage must use :meth:`written_keys` on resume.
    """

    def __init__(self, acts_dir: str | Path, hook_names: list[str], n_positions: int,
                 d_model: int, dtype: str = "float16", rows_per_shard: int = 256,
                 positions: list[int] | None = None):
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
        self.acts_dir.mkdir(parents=True, exist_ok=True)
        self._resume()

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
            self._written = {_key(r) for r in self._rows}
        listed = {s["file"] for s in self._shards}
        for path in self.acts_dir.iterdir():
            torn = _SHARD_RE.match(path.name) and path.name not in listed
            temp = path.name.startswith((".shard-", f".{INDEX}.")) and path.name.endswith(".tmp")
            if torn or temp:
                log.info("removing unfinished activation file %s", path)
                path.unlink()

    def written_keys(self) -> set[Key]:
        """(item_id, condition) of rows in complete, indexed shards (not the buffer)."""
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
        seen = self._written | {_key(m) for m in self._buffer_meta}
        clean = []
        for meta in meta_rows:
            missing = {"item_id", "condition", "positions"} - set(meta)
            if missing:
                raise ValueError(f"meta row lacks {sorted(missing)}: {meta}")
            if list(meta["positions"]) != self.positions:
                raise ValueError(f"meta row has positions {meta['positions']}, "
                                 f"want {self.positions}")
            if _key(meta) in seen:
                raise ValueError(f"activations for {_key(meta)} are already stored")
            seen.add(_key(meta))
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
        clean = self._check_batch(meta_rows, acts)
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
        """Write the buffered rows as one shard, then the index; no-op if the buffer is empty."""
        if not self._buffer_meta:
            return
        first, n_rows = len(self._rows), len(self._buffer_meta)
        tensors = {h: torch.cat(self._buffer[h]).contiguous() for h in self.hook_names}
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
        rows = [{**meta, "row": first + i} for i, meta in enumerate(self._buffer_meta)]
        try:
            atomic_write_json(self.acts_dir / INDEX, {
                **self._header(), "rows_per_shard": self.rows_per_shard,
                "shards": [*self._shards, shard], "rows": [*self._rows, *rows]})
        except BaseException:
            path.unlink(missing_ok=True)  # unindexed: would be deleted on resume anyway
            raise
        self._shards.append(shard)
        self._rows.extend(rows)
        self._written.update(_key(r) for r in rows)
        self._buffer = {h: [] for h in self.hook_names}
        self._buffer_meta = []

    def close(self) -> None:
        """Write the last, partial shard."""
        self.flush()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # Buffered rows are whole rows even when the pipeline failed mid-way: keep them.
        self.close()


class ActivationStore:
    """Read-only access to the shards a :class:`ShardWriter` wrote (safetensors, no pickle)."""

    def __init__(self, acts_dir: str | Path):
        self.acts_dir = Path(acts_dir)
        index_path = self.acts_dir / INDEX
        if not index_path.is_file():
            raise DataError("no activations stored here (index.json missing); rerun generation "
                            "with activations on", str(index_path))
        index = read_json(index_path)
        if not isinstance(index, dict) or index.get("schema_version") != SCHEMA_VERSION:
            raise DataError(f"unsupported activation index (schema_version "
                            f"{index.get('schema_version') if isinstance(index, dict) else None!r},"
                            f" expected {SCHEMA_VERSION})", str(index_path))
        self.hook_names: list[str] = list(index["hook_names"])
        self.n_positions: int = index["n_positions"]
        self.positions: list[int] = index_positions(index)
        self.d_model: int = index["d_model"]
        self.dtype: str = index["dtype"]
        self.shards: list[dict[str, Any]] = list(index["shards"])
        self.rows: list[dict[str, Any]] = list(index["rows"])
        self._starts = [s["first_row"] for s in self.shards]
        expected = 0
        for shard in self.shards:
            if shard["first_row"] != expected:
                raise DataError(f"shard {shard['file']} starts at row {shard['first_row']}, "
                                f"expected {expected}", str(index_path))
            expected += shard["n_rows"]
        if expected != len(self.rows):
            raise DataError(f"shards hold {expected} rows, index lists {len(self.rows)}",
                            str(index_path))

    def __len__(self) -> int:
        return len(self.rows)

    def key_to_row(self) -> dict[Key, int]:
        """Map (item_id, condition) to its row index."""
        return {_key(r): i for i, r in enumerate(self.rows)}

    def layers(self) -> dict[str, int]:
        """Hook name -> layer (see :func:`layer_of`; hooks without a layer are left out)."""
        found = {h: layer_of(h) for h in self.hook_names}
        return {h: layer for h, layer in sorted(found.items(), key=lambda kv: (kv[1] or 0, kv[0]))
                if layer is not None}

    def verify(self) -> None:
        """Recompute every shard's sha256; a missing or altered shard raises DataError."""
        for shard in self.shards:
            path = self.acts_dir / shard["file"]
            if not path.is_file():
                raise DataError("activation shard is missing", str(path))
            if sha256_file(path) != shard["sha256"]:
                raise DataError("activation shard is corrupted (sha256 mismatch)", str(path))

    def _read(self, shard: dict[str, Any], hook: str, lo: int, hi: int) -> torch.Tensor:
        """Rows [lo, hi) of one shard's tensor for ``hook``, as stored."""
        path = self.acts_dir / shard["file"]
        try:
            with safe_open(str(path), framework="pt") as f:
                return f.get_slice(hook)[lo:hi]
        except (OSError, SafetensorError) as exc:
            raise DataError(f"cannot read activation shard ({exc})", str(path)) from exc

    def _position(self, position: int | None) -> int | None:
        """Column of a position label (-1: last prompt token; 0: first generated token)."""
        if position is None:
            return None
        if position not in self.positions:
            raise ConfigError(f"position {position} is not stored; stored positions: "
                              f"{describe_positions(self.positions)}")
        return self.positions.index(position)

    def load(self, hook_name: str, rows: Sequence[int] | None = None,
             position: int | None = -1) -> torch.Tensor:
        """float32 activations of ``rows`` (all by default), in the order given.

        ``position`` is a label: negative counts prompt tokens from the end (-1: the last
        prompt token), ``j >= 0`` is generated token ``j`` (runs with ``--cache-steps``;
        rows' ``n_steps`` says how many are real). ``None`` keeps all positions.
        Shape (n, d_model), or (n, n_positions, d_model) with ``None``.
        """
        if hook_name not in self.hook_names:
            raise UnknownNameError("hook", hook_name, self.hook_names)
        pos = self._position(position)
        wanted = list(range(len(self.rows))) if rows is None else [int(r) for r in rows]
        bad = [r for r in wanted if not 0 <= r < len(self.rows)]
        if bad:
            raise IndexError(f"rows {bad[:5]} outside 0..{len(self.rows) - 1}")
        tail = (self.n_positions, self.d_model) if pos is None else (self.d_model,)
        out = torch.empty((len(wanted), *tail), dtype=torch.float32)
        by_shard: dict[int, list[tuple[int, int]]] = {}
        for i, row in enumerate(wanted):
            s = bisect.bisect_right(self._starts, row) - 1
            by_shard.setdefault(s, []).append((i, row - self._starts[s]))
        for s, pairs in by_shard.items():
            offsets = [o for _, o in pairs]
            lo = min(offsets)
            block = self._read(self.shards[s], hook_name, lo, max(offsets) + 1)
            picked = block[torch.tensor(offsets) - lo]
            if pos is not None:
                picked = picked[:, pos]
            out[torch.tensor([i for i, _ in pairs])] = picked.float()
        return out

    def iter_shards(self, hook_names: Sequence[str] | None = None
                    ) -> Iterator[tuple[list[dict[str, Any]], dict[str, torch.Tensor]]]:
        """Yield (meta rows, {hook: float32 (n, n_positions, d_model)}) shard by shard."""
        hooks = list(self.hook_names if hook_names is None else hook_names)
        for hook in hooks:
            if hook not in self.hook_names:
                raise UnknownNameError("hook", hook, self.hook_names)
        for shard in self.shards:
            first, n = shard["first_row"], shard["n_rows"]
            tensors = {h: self._read(shard, h, 0, n).float() for h in hooks}
            yield self.rows[first:first + n], tensors
