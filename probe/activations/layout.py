"""The on-disk layout of an activation folder: names, dtypes, position labels, row keys."""

from __future__ import annotations

import re
from typing import Any

import torch

SCHEMA_VERSION = 1
INDEX = "index.json"
# Sub-folder of a run's activations holding multi-turn rows' earlier rounds (a store of its
# own: position label r is round r's answer position; see probe.engine.act_rows).
ROUNDS_DIR = "rounds"
DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
}
SHARD_RE = re.compile(r"^shard-\d{5,}\.safetensors$")
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")

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


def key_of(meta: dict[str, Any]) -> Key:
    return (str(meta["item_id"]), str(meta["condition"]))


