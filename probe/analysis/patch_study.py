"""Effects of activation patching, the ``probe patch`` study and its plots.

The mechanics (pairs, patches, hooks, batched patched runs) live in
:mod:`probe.analysis.patching`; this module turns the patched metrics into effects with
intervals (ratios only where the source-target gap is reliable, see that module's
docstring), runs the whole study on a run folder, writes ``patching.json`` and the plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from probe.analysis import answers as ans
from probe.analysis.patching import (
    THRESHOLD,
    Patch,
    build_pairs,
    component_patches,
    patch_pairs,
    resid_hooks,
    resid_patches,
)
from probe.errors import ConfigError
from probe.inference import Engine
from probe.models import LoadedModel
from probe.plots import pyplot, save_figure
from probe.scoring.stats import bootstrap_ci


def gap_summary(source: np.ndarray, target: np.ndarray, threshold: float = THRESHOLD,
                seed: int = 0) -> dict[str, Any]:
    """Mean source-target gap with its interval, and whether a ratio over it is meaningful."""
    gap = ans.mean_ci(source - target, seed=seed)
    low, high = gap["ci"]
    reliable = (gap["mean"] is not None and abs(gap["mean"]) >= threshold
                and low is not None and high is not None and not low <= 0 <= high)
    note = None if reliable else (
        f"mean source-target gap {gap['mean']} (95% CI {gap['ci']}) is below {threshold} "
        f"logits or its interval includes 0: normalised effects are left out (null)")
    return {**gap, "reliable": reliable, "note": note}


def effect(patched: np.ndarray, source: np.ndarray, target: np.ndarray, reliable: bool,
           threshold: float = THRESHOLD, seed: int = 0) -> dict[str, Any]:
    """Raw patched metric, delta from target, and normalised effects of one patch."""
    gap, delta = source - target, patched - target
    out: dict[str, Any] = {"patched": ans.mean_ci(patched, seed=seed),
                           "delta": ans.mean_ci(delta, seed=seed),
                           "normalised": None, "normalised_items": None}
    if reliable:
        cols = np.stack([delta, gap], axis=1)
        low, high = bootstrap_ci(cols, lambda s: s[:, 0] / s[:, 1], ans.N_BOOT, seed)
        out["normalised"] = {"mean": float(delta.mean() / gap.mean()),
                             "ci": [ans._num(low), ans._num(high)]}
    big = np.abs(gap) >= threshold
    if big.any():
        out["normalised_items"] = {"mean": float((delta[big] / gap[big]).mean()),
                                   "n": int(big.sum())}
    out["per_item"] = patched.tolist()
    return out


def summarise(arrays: dict[str, np.ndarray], patches: Sequence[Patch], n_layers: int, k: int,
              threshold: float = THRESHOLD) -> dict[str, Any]:
    """patching.json's results: the metric, the residual grid and the component bars."""
    src, tgt = arrays["source"], arrays["target"]
    gap = gap_summary(src, tgt, threshold)
    cells = {d: [effect(arrays[d][i], src, tgt, gap["reliable"], threshold)
                 for i in range(len(patches))] for d in ("denoise", "noise")}
    n_resid = (n_layers + 1) * k
    labels = [f"resid_pre {L}" for L in range(n_layers)] + [f"resid_post {n_layers - 1}"]
    resid = {"hooks": resid_hooks(n_layers), "labels": labels, "positions": list(range(-k, 0))}
    comps: dict[str, Any] = {"layers": list(range(n_layers)), "positions": list(range(-k, 0))}
    for d, effects in cells.items():
        resid[d] = [effects[r * k:(r + 1) * k] for r in range(n_layers + 1)]
        comps[d] = {c: effects[n_resid + j::2] for j, c in enumerate(("attn", "mlp"))}
    return {"metric": {"source": ans.mean_ci(src), "target": ans.mean_ci(tgt), "gap": gap},
            "resid": resid, "components": comps}


def run_patching(run_dir: str, source: str, target: str = ans.BASELINE, positions: int = 1,
                 limit: int | None = None, loaded: LoadedModel | None = None,
                 data_dir: str | None = None, threshold: float = THRESHOLD) -> dict[str, Any]:
    """Patch ``source`` into ``target`` (and back) on a run's items; write json and plots."""
    import time

    from probe.io import atomic_write_json
    from probe.scoring.metrics import json_safe

    if positions < 1:
        raise ConfigError(f"--positions must be >= 1, got {positions}")
    run = ans.load_run(run_dir, data_dir, limit)
    loaded = loaded or ans.load_run_model(run)
    pairs, skipped = build_pairs(run, loaded, source, target)
    if not pairs:
        raise ConfigError(f"no items with rows under both {source} and {target} and a "
                          f"biased/unbiased answer pair (skipped: {skipped})")
    patches = resid_patches(loaded.n_layers, positions) + component_patches(loaded.n_layers,
                                                                            positions)
    start = time.perf_counter()
    arrays = patch_pairs(Engine(loaded, run.config.batch_size, run.config.attention), pairs,
                         patches, positions)
    result = summarise(arrays, patches, loaded.n_layers, positions, threshold)
    result["meta"] = {
        "source": source, "target": target, "positions": positions, "n_items": len(pairs),
        "skipped": skipped, "model": run.config.model, "mode": run.config.mode,
        "metric": "logit(unbiased letter) - logit(biased letter) after 'The answer is ('",
        "normalised": "(patched - target) / (source - target), ratio of item means",
        "threshold": threshold, "n_boot": ans.N_BOOT, "passes_per_batch":
            f"2 full + 2 prefix passes, {2 * len(patches)} patched last-{positions}-token runs "
            "grouped into passes of <= 64 rows",
        "seconds": round(time.perf_counter() - start, 2)}
    result["items"] = [{"item_id": p.item_id, "source": float(s), "target": float(t)}
                       for p, s, t in zip(pairs, arrays["source"], arrays["target"],
                                          strict=True)]
    result = json_safe(result)
    atomic_write_json(Path(run_dir) / "patching.json", result)
    plot_patching(result, Path(run_dir) / "plots")
    return result


def _value(cell: dict[str, Any], reliable: bool) -> float:
    block = cell["normalised"] if reliable else cell["delta"]
    return np.nan if block is None or block["mean"] is None else float(block["mean"])


def plot_patching(result: dict[str, Any], plots_dir: Path) -> list[Path]:
    """Heatmap (layer x position) and per-layer component bars, denoising and noising."""
    plt = pyplot()

    plots_dir.mkdir(parents=True, exist_ok=True)
    reliable = bool(result["metric"]["gap"]["reliable"])
    what = "normalised effect" if reliable else "patched - target (logits)"
    meta = result["meta"]
    title = f"{meta['source']} -> {meta['target']}, n={meta['n_items']}"
    resid, comps = result["resid"], result["components"]
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.2 * len(resid["positions"]) * 2,
                                            2 + 0.28 * len(resid["labels"])), squeeze=False)
    for ax, d in zip(axes[0], ("denoise", "noise"), strict=True):
        grid = np.array([[_value(c, reliable) for c in row] for row in resid[d]])
        top = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
        im = ax.imshow(grid, aspect="auto", cmap="RdBu_r", origin="lower",
                       vmin=-(top or 1.0), vmax=top or 1.0)  # white = no effect
        ax.set(title=f"{d}: {title}", xlabel="position from end", ylabel="residual hook",
               xticks=range(len(resid["positions"])), xticklabels=resid["positions"],
               yticks=range(len(resid["labels"])), yticklabels=resid["labels"])
        fig.colorbar(im, ax=ax, label=what)
    paths = [plots_dir / "patching_resid.png", plots_dir / "patching_components.png"]
    save_figure(fig, paths[0])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), squeeze=False)
    layers = np.array(comps["layers"])
    for ax, d in zip(axes[0], ("denoise", "noise"), strict=True):
        for j, c in enumerate(("attn", "mlp")):
            ax.bar(layers + (j - 0.5) * 0.4, [_value(x, reliable) for x in comps[d][c]],
                   width=0.4, label=f"{c}_out")
        ax.set(title=f"{d}: {title}", xlabel="layer", ylabel=what)
        ax.axhline(0, color="grey", lw=0.8)
        ax.legend()
    save_figure(fig, paths[1])
    return paths
