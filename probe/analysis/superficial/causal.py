"""Causal check: add the concept direction to the baseline and re-score (activation addition).

Adapted from Lee et al. 2025's confirmation of a contrastive direction by activation
addition, with probe's steering machinery (:mod:`probe.analysis.steering`): at
``blocks.L.hook_resid_post``, at each baseline row's last prompt position, ``alpha`` times
the raw concept direction (stereotyped minus contrast answer, a difference of means at the
answer position) is added, and the baseline is re-scored exactly as the run scored it.
Each template half is steered with the direction fitted on the other half (held out).
Positive alpha pushes toward the stereotyped answer, negative away. The control is a band of
``n_random`` norm-matched random directions at the same layer, alpha and position; a result
inside their 5-95% range is "not distinguishable from the control". Every steered run is a
resumable unit (``RUN/superficial.partial.jsonl``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from probe.analysis import answers as ans
from probe.analysis import steering as st
from probe.analysis.checkpoint import Checkpoint, run_fingerprint
from probe.engine.inference import Engine
from probe.engine.models import LoadedModel
from probe.engine.pipeline import Unit
from probe.errors import ConfigError

# Each nonzero alpha costs 1 + n_random re-scorings of the baseline per layer (probe steer's
# cost; docs/methods.md): away from and toward the stereotyped answer, one step each.
DEFAULT_ALPHAS = [-1.0, 0.0, 1.0]


def causal_check(run_dir: Path, vectors: dict[str, np.ndarray], index: dict[str, Any],
                 contrast: str, layers: list[int], alphas: list[float] | None, seed: int,
                 limit: int | None, data_dir: str | None, loaded: LoadedModel | None,
                 n_random: int) -> dict[str, Any]:
    """Bias score and readout of the steered baseline per layer and alpha (module doc)."""
    alphas = list(DEFAULT_ALPHAS if alphas is None else alphas)
    run = ans.load_run(run_dir, data_dir, limit)
    hooks = {L: st.resid_hook(L) for L in layers}
    missing = [L for L, h in hooks.items() if f"{contrast}/0/{h}" not in vectors]
    if missing:
        raise ConfigError(f"--causal-layers {missing}: no concept direction at those layers "
                          f"(resid_post must be cached there)")
    folds_of = index["folds"]
    units = [Unit(it, ans.BASELINE) for it in run.items
             if run.row(it.item_id, ans.BASELINE) and it.group in folds_of]
    folds = [[u for u in units if folds_of[u.item.group] == f] for f in (0, 1)]
    if not all(folds):
        raise ConfigError("the causal check needs baseline items in both template halves")
    loaded = loaded or ans.load_run_model(run)
    engine = Engine(loaded, run.config.batch_size, run.config.attention)
    ckpt = Checkpoint(run_dir, "superficial", {
        "--contrast": contrast, "--causal-layers": layers, "--alphas": alphas, "--seed": seed,
        "--limit": limit, "--n-random": n_random,
        "run rows (generations.jsonl sha256)": run_fingerprint(run_dir)})
    n_steered = sum(1 for a in alphas if a != 0)
    bar = ckpt.bar(1 + len(layers) * n_steered * (1 + n_random), "steering runs")
    try:
        _, zero = ckpt.unit("alpha0", lambda: st.steered_folds(engine, run, [units], [[]]))
        bar.update()
        results = []
        for L in layers:
            vecs = [torch.from_numpy(vectors[f"{contrast}/{f}/{hooks[L]}"]).float()
                    for f in (0, 1)]
            results += st._steer_layer(engine, run, folds, ckpt, bar, L, vecs, alphas, zero,
                                       seed, n_random)
    finally:
        bar.close()
        ckpt.close()
    ckpt.finish()
    return {"layers": layers, "alphas": alphas, "n_random": n_random,
            "n_items": len(units), "hook": "blocks.L.hook_resid_post, last prompt position",
            "alpha": "multiple of the raw concept direction (stereotyped - contrast answer)",
            "results": results}
