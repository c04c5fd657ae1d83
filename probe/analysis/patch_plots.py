"""Figures of a patching study: residual grid, components with intervals, heads.

Denoising and noising share one orientation (0 = no effect, 1 = the full source-target gap;
see :mod:`probe.analysis.patch_study`), so one colour scale serves both: white is no effect,
red the full effect, blue an effect the other way. Raw deltas are plotted (and captioned as
such, in nats) when the gap is too small for a normalised effect. Cells whose 95% interval
includes 0 are dotted: not distinguishable from no effect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from probe.presentation.plots import pyplot, save_figure


def _block(cell: dict[str, Any], reliable: bool) -> dict[str, Any] | None:
    return cell.get("normalised") if reliable else cell.get("delta")


def value(cell: dict[str, Any], reliable: bool) -> float:
    """The plotted number of one cell (NaN when absent)."""
    block = _block(cell, reliable)
    return np.nan if block is None or block.get("mean") is None else float(block["mean"])


def includes_zero(cell: dict[str, Any], reliable: bool) -> bool:
    """Whether the cell's 95% interval includes 0 (or it has none)."""
    block = _block(cell, reliable)
    low, high = (block or {}).get("ci", [None, None])
    return low is None or high is None or low <= 0 <= high


def _heatmap(fig: Any, ax: Any, rows: list[list[dict[str, Any]]], reliable: bool,
             what: str) -> None:
    grid = np.array([[value(c, reliable) for c in row] for row in rows], dtype=float)
    top = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    top = max(top, 1.0) if reliable else (top or 1.0)
    im = ax.imshow(grid, aspect="auto", cmap="RdBu_r", origin="lower", vmin=-top, vmax=top,
                   interpolation="nearest")  # white = no effect, red = toward the other prompt
    fig.colorbar(im, ax=ax, label=what)
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            if includes_zero(cell, reliable):
                ax.plot(c, r, ".", color="grey", ms=2)


def plot_patching(result: dict[str, Any], plots_dir: Path) -> list[Path]:
    """Residual heatmaps, component bars (95% intervals) and head heatmaps, both ways."""
    plt = pyplot()
    plots_dir.mkdir(parents=True, exist_ok=True)
    reliable = bool(result["metric"]["gap"]["reliable"])
    what = ("normalised effect (0 none, 1 full)" if reliable
            else "patched - unpatched (nats, raw: gap too small to normalise)")
    meta = result["meta"]
    title = (f"{meta['source']} vs {meta['target']}, n={meta['n_items']}, "
             f"{meta['alignment']}, {meta['scope']}")
    resid, comps, heads = result["resid"], result["components"], result["heads"]
    answer = resid.get("answer")
    rows = {d: [r + ([answer[d][i]] if answer else []) for i, r in enumerate(resid[d])]
            for d in ("denoise", "noise")}
    xlabels = [str(p) for p in resid["positions"]] + (["answer"] if answer else [])
    tokens = meta.get("first_item_tokens") or []
    if len(tokens) == len(resid["positions"]):
        xlabels = [f"{t!r} {p}" for t, p in zip(tokens, resid["positions"], strict=True)] + (
            ["answer"] if answer else [])
    ncols = len(xlabels)
    fig, axes = plt.subplots(2, 1, figsize=(min(60, 4 + 0.22 * ncols),
                                            4 + 0.5 * len(resid["labels"])), squeeze=False)
    step = max(1, ncols // 120)
    for ax, d in zip(axes[:, 0], ("denoise", "noise"), strict=True):
        _heatmap(fig, ax, rows[d], reliable, what)
        edited = set(meta.get("edited_offsets") or [])
        ax.set(title=f"{d}: {title} (dots: 95% CI includes 0)",
               xlabel="position from the prompt end (first item's token)",
               ylabel="residual hook", yticks=range(len(resid["labels"])),
               yticklabels=resid["labels"])
        ax.set_xticks(range(0, ncols, step), [xlabels[i] for i in range(0, ncols, step)],
                      rotation=90, fontsize=6)
        for i, p in enumerate(resid["positions"]):
            if p in edited:
                ax.axvline(i, color="black", lw=0.4, alpha=0.5)
    paths = [plots_dir / "patching_resid.png", plots_dir / "patching_components.png",
             plots_dir / "patching_heads.png"]
    save_figure(fig, paths[0])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), squeeze=False)
    layers = np.array(comps["layers"])
    for ax, d in zip(axes[0], ("denoise", "noise"), strict=True):
        for j, c in enumerate(("attn", "mlp")):
            cells = comps[d][c]
            ys = np.array([value(x, reliable) for x in cells])
            ci = np.array([[np.nan if v is None else v for v in
                            ((_block(x, reliable) or {}).get("ci") or [None, None])]
                           for x in cells], dtype=float)
            err = np.abs(np.stack([ys - ci[:, 0], ci[:, 1] - ys]))
            ax.bar(layers + (j - 0.5) * 0.4, ys, width=0.4, label=f"{c}_out",
                   yerr=np.nan_to_num(err), capsize=2)
        ax.set(title=f"{d}: {title}", xlabel="layer", ylabel=what)
        ax.axhline(0, color="grey", lw=0.8)
        ax.legend(title="bars: 95% CI")
    save_figure(fig, paths[1])
    fig, axes = plt.subplots(1, 2, figsize=(12, 2 + 0.3 * len(heads["layers"])), squeeze=False)
    for ax, d in zip(axes[0], ("denoise", "noise"), strict=True):
        _heatmap(fig, ax, heads[d], reliable, what)
        ax.set(title=f"{d}: attention heads, {title}", xlabel="head", ylabel="layer")
    save_figure(fig, paths[2])
    return paths
