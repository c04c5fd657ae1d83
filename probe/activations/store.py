"""Read activation shards back (safetensors only, no pickle), by hook, row and position."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from probe.activations.layout import (
    INDEX,
    SCHEMA_VERSION,
    Key,
    describe_positions,
    index_positions,
    key_of,
    layer_of,
)
from probe.errors import ConfigError, DataError, UnknownNameError
from probe.store.io import read_json, sha256_file


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
        return {key_of(r): i for i, r in enumerate(self.rows)}

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
