"""Figures of ``probe superficial``: trajectories, the ratio per layer, the shift alignment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from probe.presentation.plots import pyplot, save_figure


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) else np.nan


def _band(ax: Any, xs: list[Any], recs: list[dict[str, Any]], label: str, color: str,
          value: str = "mean", ci: str = "ci") -> None:
    ys = [_num(r.get(value)) for r in recs]
    lo = [_num((r.get(ci) or [None, None])[0]) for r in recs]
    hi = [_num((r.get(ci) or [None, None])[1]) for r in recs]
    ax.plot(xs, ys, marker=".", color=color, label=label)
    ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)


def plot_trajectories(out: dict[str, Any], path: Path) -> Path:
    """Mean projection per layer, a panel per component, a line (95% CI band) per condition
    and cached round; last panel: the same rows' ambiguous-context bias score."""
    plt = pyplot()
    recs = out["trajectories"]["records"]
    comps = list(dict.fromkeys(r["component"] for r in recs))
    fig, axes = plt.subplots(1, len(comps) + 1, figsize=(5 * (len(comps) + 1), 4.3),
                             squeeze=False)
    series = list(dict.fromkeys((r["condition"], r["round"]) for r in recs))
    for ax, comp in zip(axes[0], comps, strict=False):
        for i, (cond, rnd) in enumerate(series):
            mine = [r for r in recs if r["component"] == comp and r["condition"] == cond
                    and r["round"] == rnd]
            label = f"{cond}" + ("" if rnd is None else f" round {rnd}") + \
                f" (n={mine[0]['n'] if mine else 0})"
            _band(ax, [r["layer"] for r in mine], mine, label, f"C{i % 10}")
        ax.set(title=f"{comp}: projection on the concept direction",
               xlabel="layer", ylabel="mean projection (+ = toward stereotyped)")
        ax.axhline(0, color="grey", lw=0.8)
        ax.legend(fontsize=7)
    ax = axes[0][-1]
    beh = out["trajectories"]["behaviour"]
    names = list(beh)
    for j, cond in enumerate(names):
        cell = beh[cond]["ambig"]
        lo, hi = (_num(v) for v in cell.get("bias_score_ci") or [None, None])
        y = _num(cell.get("bias_score"))
        ax.errorbar([j], [y], yerr=[[y - lo], [hi - y]], fmt="o", color=f"C{j % 10}",
                    capsize=3)
    ax.set_xticks(range(len(names)), [f"{c}\nn={beh[c]['ambig']['n']}" for c in names],
                  rotation=45, fontsize=7)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(title="same rows: ambiguous bias score (95% CI)", ylabel="bias score")
    return save_figure(fig, path)


def plot_ratio(out: dict[str, Any], path: Path) -> Path:
    """Per condition, the ratio (internal / behavioural change) per resid layer with its 95%
    interval, in the primary context; the model verdict in the title."""
    plt = pyplot()
    ctx = out["meta"]["primary_context"]
    tests = [t for t in out["superficial"]["by_hook"]
             if t["component"] == "resid" and t["context"] == ctx]
    conds = list(dict.fromkeys(t["condition"] for t in tests))
    fig, axes = plt.subplots(1, max(len(conds), 1), figsize=(4.6 * max(len(conds), 1), 4),
                             squeeze=False)
    for ax, cond in zip(axes[0], conds, strict=False):
        mine = [t for t in tests if t["condition"] == cond]
        xs = [t["layer"] for t in mine]
        ys = np.array([_num(t["ratio"]["value"]) for t in mine])
        ci = np.array([[_num(v) for v in t["ratio"]["ci"]] for t in mine]).reshape(-1, 2)
        ax.errorbar(xs, ys, yerr=np.abs(ci.T - ys), fmt="o", ms=3, capsize=2)
        ax.axhline(0, color="grey", lw=0.8)
        ax.axhline(out["meta"]["tau"], color="k", ls="--", lw=0.8, label="tau")
        verdict = out["superficial"]["model"].get(cond, {}).get("verdict")
        n = mine[0]["n_pairs"] if mine else 0
        ax.set(title=f"{cond}: {verdict} (n={n} pairs, {ctx})", xlabel="layer",
               ylabel="internal / behavioural change")
        finite = ci[np.isfinite(ci).all(1)]
        if finite.size:  # keep wild intervals from flattening the rest
            ax.set_ylim(max(-3, finite.min() - 0.2), min(3, finite.max() + 0.2))
        if not np.isfinite(ys).any():
            ax.text(0.5, 0.5, "no ratio: " + (mine[0]["rule"] if mine else "no rows"),
                    transform=ax.transAxes, ha="center", fontsize=8, wrap=True)
    return save_figure(fig, path)


def plot_alignment(out: dict[str, Any], path: Path) -> Path:
    """Cosine of each condition's resid shift with the concept direction per layer (95% CI),
    the random-direction band (grey) and the placebo's cosine (dashed)."""
    plt = pyplot()
    recs = [r for r in out["alignment"] if r["component"] == "resid"]
    conds = list(dict.fromkeys(r["condition"] for r in recs))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, cond in enumerate(conds):
        mine = [r for r in recs if r["condition"] == cond]
        xs = [r["layer"] for r in mine]
        n = mine[0]["n_pairs"] if mine else 0
        _band(ax, xs, mine, f"{cond} (n={n})", f"C{i % 10}", "cosine", "ci")
        if i == 0:
            band = np.array([[_num(v) for v in r["random"]["band_95"]] for r in mine])
            ax.fill_between(xs, band[:, 0], band[:, 1], color="grey", alpha=0.25,
                            linewidth=0, label="random directions (95%)")
    ax.axhline(0, color="k", lw=0.8)
    ax.set(title="Prompt-induced shift vs concept direction (< 0: away from stereotyped)",
           xlabel="layer", ylabel="cosine (held-out halves)")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_all(out: dict[str, Any], plots_dir: Path) -> list[Path]:
    """Every figure of a superficial.json."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    return [plot_trajectories(out, plots_dir / "superficial_trajectories.png"),
            plot_ratio(out, plots_dir / "superficial_ratio.png"),
            plot_alignment(out, plots_dir / "superficial_alignment.png")]
