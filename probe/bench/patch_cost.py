"""Cost of all-position activation patching relative to its bound, as a ratio.

The bound (issue 10): patching should cost at most ~3x one forward pass per patched run.
:func:`patch_cost` times, in one process and on one aligned prompt pair, the residual-stream
patches of ``positions`` prompt positions x every residual hook run both ways (denoising and
noising, as ``probe patch`` does, so ``2 * N * L`` patched runs), and ``N * L`` plain forward
passes of the target prompt through the same engine. It reports seconds per patched run over
seconds per plain forward pass: a ratio, which load from other processes affects far less
than absolute seconds (both halves run interleaved in the same process).
"""

from __future__ import annotations

import time
from typing import Any

from probe.analysis import readout as ro
from probe.analysis.patching import Patch, PromptPair, _forward, patch_pairs, resid_hooks
from probe.engine.inference import Engine
from probe.engine.models import LoadedModel
from probe.errors import ConfigError

# Two prompts that differ by one word of one token each (checked): an aligned pair.
PROMPT = ("I saw a grandson and their{w} last week outside the store. Who was not "
          "comfortable using the phone? Answer with a letter. The answer is (")
EDIT = (" grandfather", " customer")
LETTERS = ("a", "b", "c")


def aligned_pair(loaded: LoadedModel) -> PromptPair:
    """The benchmark's source/target prompts, refused unless they tokenize to one length."""
    src, tgt = (PROMPT.format(w=w) for w in EDIT)
    if len(loaded.tokenizer(src).input_ids) != len(loaded.tokenizer(tgt).input_ids):
        raise ConfigError(f"{loaded.name}: the benchmark pair is not token-aligned")
    return PromptPair("bench", ro.Query("bench", "s", src, LETTERS, 0, 1, None),
                      ro.Query("bench", "t", tgt, LETTERS, 0, 1, None))


def patch_cost(loaded: LoadedModel, positions: int = 8, batch_size: int = 16,
               rounds: int = 2) -> dict[str, Any]:
    """Seconds per patched run / seconds per plain forward pass, N=``positions`` last prompt
    positions x every residual hook; ``rounds`` alternations of the two timings, min kept."""
    engine = Engine(loaded, batch_size, "eager")
    pair = aligned_pair(loaded)
    patches = [Patch(h, (-k,)) for h in resid_hooks(loaded.n_layers)
               for k in range(positions, 0, -1)]
    packed = ro.pack(engine, [pair.target])
    _forward(engine, packed, [])  # warm-up
    t_patch, t_fwd = float("inf"), float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        patch_pairs(engine, "letter", [pair], patches)
        t_patch = min(t_patch, time.perf_counter() - start)
        start = time.perf_counter()
        for _ in patches:
            _forward(engine, packed, [])
        t_fwd = min(t_fwd, time.perf_counter() - start)
    per_patch, per_fwd = t_patch / (2 * len(patches)), t_fwd / len(patches)
    return {"model": loaded.name, "positions": positions, "hooks": loaded.n_layers + 1,
            "prompt_tokens": int(packed.input_ids.shape[1]), "patched_runs": 2 * len(patches),
            "forward_passes": len(patches), "ratio": per_patch / per_fwd,
            "bound": 3.0, "within_bound": per_patch / per_fwd <= 3.0}
