"""How long the study loop waits on activation shard writes, synchronous vs background.

The caller's time in :meth:`ShardWriter.add` is time a GPU sits idle between batches. This
feeds synthetic rows of a model's activation shape (hooks x positions x d_model) in batches
and reports the caller's wait per batch and at the batches that fill a shard.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

import torch

from probe.activations import ShardWriter


def writer_stall(d_model: int, n_hooks: int, batch: int = 32, n_batches: int = 32,
                 rows_per_shard: int = 256, background: bool = False) -> dict[str, Any]:
    """Caller-side seconds per ``add`` (median, and max at shard-filling batches), total."""
    hooks = ["hook_embed"] + [f"blocks.{i}.hook_resid_post" for i in range(n_hooks - 1)]
    gen = torch.Generator().manual_seed(0)
    acts = {h: torch.randn(batch, 1, d_model, generator=gen) for h in hooks}
    waits = []
    with tempfile.TemporaryDirectory() as tmp:
        writer = ShardWriter(tmp, hooks, 1, d_model, rows_per_shard=rows_per_shard,
                             background=background)
        start = time.perf_counter()
        for b in range(n_batches):
            metas = [{"item_id": f"{b}-{i}", "condition": "c", "positions": [-1]}
                     for i in range(batch)]
            t0 = time.perf_counter()
            writer.add(metas, acts)
            waits.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        writer.close()
        close = time.perf_counter() - t0
        total = time.perf_counter() - start
    filling = [w for b, w in enumerate(waits) if ((b + 1) * batch) % rows_per_shard < batch]
    return {"background": background, "d_model": d_model, "n_hooks": n_hooks,
            "batch": batch, "n_batches": n_batches, "median_wait_s": statistics.median(waits),
            "max_wait_at_shard_s": max(filling) if filling else 0.0,
            "sum_wait_s": sum(waits), "close_s": close, "total_s": total}
