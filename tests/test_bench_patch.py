"""The patching-cost benchmark runs on the tiny model and counts what it says it counts."""

from __future__ import annotations

import math

from probe.bench.patch_cost import aligned_pair, patch_cost


def test_patch_cost_counts(tiny, one_thread) -> None:
    pair = aligned_pair(tiny)
    tok = tiny.tokenizer
    assert len(tok(pair.source.prompt).input_ids) == len(tok(pair.target.prompt).input_ids)
    out = patch_cost(tiny, positions=2, rounds=1)
    assert out["forward_passes"] == 2 * out["hooks"] == 2 * (tiny.n_layers + 1)
    assert out["patched_runs"] == 2 * out["forward_passes"]  # denoising and noising
    assert math.isfinite(out["ratio"]) and out["ratio"] > 0
    assert out["within_bound"] == (out["ratio"] <= out["bound"])
