"""The figure of ``probe compare``: per model, each condition's gains with their paired
intervals, and each condition's own probe accuracy and patching peak with theirs.

Filled circles are models prompted through a chat template, hollow squares base models,
crosses models whose kind is unknown. Warnings (runs that differ in items, mode or
conditions) are printed on the figure itself, so it cannot circulate without them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from probe.presentation.plots import pyplot


def _size_label(n: int | None) -> str:
    if n is None:
        return "size ?"
    for suffix, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(n)


def _model_order(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs by size (unknown sizes last), so the x axis reads small to large."""
    return sorted(runs, key=lambda r: (r["n_params"] is None, r["n_params"] or 0, r["run"]))


# (row key, title, layer key shown next to the point)
PANELS = [("gain_bias_score_ambig", "Δ bias score, ambiguous", None),
          ("gain_bias_score_disambig", "Δ bias score, disambiguated", None),
          ("probe_accuracy", "probe accuracy (the condition's own target)", "probe_layer"),
          ("gain_accuracy_ambig", "Δ accuracy, ambiguous", None),
          ("gain_accuracy_disambig", "Δ accuracy, disambiguated", None),
          ("patching_peak", "patching peak (the condition's own pair)", "patching_peak_layer")]
MARKERS = {"chat": ("o", True), "base": ("s", False)}


def _num(value: Any) -> bool:
    return isinstance(value, (int, float))


def _points(ax: Any, rows: list[dict[str, Any]], conds: list[str], pos: dict[str, int],
            key: str, layer_key: str | None) -> None:
    """Each condition's value per model, offset side by side, with its 95% interval."""
    drawn = 0
    for j, cond in enumerate(conds):
        dx = (j - (len(conds) - 1) / 2) * 0.12
        color = f"C{j % 10}"
        mine = [r for r in rows if r["condition"] == cond and _num(r.get(key))]
        for k, row in enumerate(mine):
            x, value, lo, hi = pos[row["run"]] + dx, row[key], row.get(f"{key}_lo"), \
                row.get(f"{key}_hi")
            if _num(lo) and _num(hi):
                # Clipped at the value where rounding put a bound past it.
                ax.errorbar(x, value, yerr=[[max(value - lo, 0)], [max(hi - value, 0)]],
                            color=color, capsize=2, linewidth=0.8)
            marker, filled = MARKERS.get(row.get("kind") or "", ("X", True))
            ax.plot(x, value, marker, color=color, mfc=color if filled else "none",
                    label=cond if k == 0 else None)
            if layer_key and row.get(layer_key) is not None:
                ax.annotate(f"L{row[layer_key]}", (x, value), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
            drawn += 1
    if not drawn:
        ax.text(0.5, 0.75, "not computed for any run", ha="center", transform=ax.transAxes)


def plot_compare(result: dict[str, Any], path: str | Path) -> Path:
    """Gains, probe accuracy and patching peak per model (ordered by size) and condition."""
    plt = pyplot()
    runs = _model_order(result["runs"])
    pos = {r["run"]: i for i, r in enumerate(runs)}
    conds = list(dict.fromkeys(row["condition"] for row in result["rows"]))
    warnings = result.get("warnings") or []
    fig, axes = plt.subplots(2, 3, figsize=(max(12.0, 2.2 * len(runs) + 8),
                                            7.5 + 0.3 * len(warnings)))
    for ax, (key, title, layer_key) in zip(axes.ravel(), PANELS, strict=True):
        _points(ax, result["rows"], conds, pos, key, layer_key)
        # chance for a balanced binary probe; no change for gains and patching effects
        ax.axhline(0.5 if key == "probe_accuracy" else 0.0, color="grey", linewidth=0.8,
                   linestyle="--")
        ax.set_title(title + ("" if layer_key else " (condition − baseline)"), fontsize=10)
        ax.set_ylabel({"probe_accuracy": "accuracy", "patching_peak": "effect"}.get(key, "gain"))
    labels = [f"{Path(str(r['model'])).name}\n{_size_label(r['n_params'])}, {r['kind'] or '?'}"
              for r in runs]
    for ax in axes.ravel():
        ax.set_xticks(range(len(runs)))
        ax.set_xticklabels(labels, fontsize=9)
        ax.set_xlim(-0.6, len(runs) - 0.4)
    handles, names = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="upper right", fontsize=9, title="condition")
    fig.suptitle("Self-correction by model, paired 95% template-cluster bootstrap intervals\n"
                 "(bias: < 0 = less biased; filled circle = chat template, hollow square = "
                 "base, cross = unknown)", fontsize=10, x=0.45)
    bottom = 0.0
    if warnings:
        text = "\n".join(textwrap.fill("WARNING: " + w, 160) for w in warnings)
        fig.text(0.01, 0.005, text, color="tab:red", fontsize=8, va="bottom")
        bottom = min(0.3, 0.035 * (text.count("\n") + 1))
    path = Path(path)
    fig.tight_layout(rect=(0, bottom, 0.9, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
