"""The figure of ``probe compare``: gains per model with their paired intervals, and peaks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from probe.plots import pyplot


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


PANELS = [("gain_bias_score_ambig", "Δ bias score, ambiguous"),
          ("gain_bias_score_disambig", "Δ bias score, disambiguated"),
          ("gain_accuracy_ambig", "Δ accuracy, ambiguous"),
          ("gain_accuracy_disambig", "Δ accuracy, disambiguated")]


def _peak_panel(ax: Any, runs: list[dict[str, Any]], key: str, layer_key: str,
                title: str, ylabel: str) -> None:
    found = {i: float(r[key]) for i, r in enumerate(runs) if isinstance(r.get(key), (int, float))}
    xs = list(found)
    ax.bar(xs, list(found.values()), color="tab:purple")
    for i, v in found.items():
        ax.text(i, v, f"L{runs[i].get(layer_key)}", ha="center", fontsize=7,
                va="bottom" if v >= 0 else "top")
    if not xs:
        ax.text(0.5, 0.5, "not computed for any run", ha="center", transform=ax.transAxes)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)


def plot_compare(result: dict[str, Any], path: str | Path) -> Path:
    """Gains vs model (ordered by size; filled = aligned/chat, hollow = base), and peaks."""
    plt = pyplot()
    runs = _model_order(result["runs"])
    pos = {r["run"]: i for i, r in enumerate(runs)}
    conds = list(dict.fromkeys(row["condition"] for row in result["rows"]))
    fig, axes = plt.subplots(2, 3, figsize=(max(12.0, 2.2 * len(runs) + 8), 7.5))
    gain_axes = [axes[0, 0], axes[0, 1], axes[1, 0], axes[1, 1]]
    for ax, (key, title) in zip(gain_axes, PANELS, strict=True):
        for j, cond in enumerate(conds):
            dx = (j - (len(conds) - 1) / 2) * 0.12
            rows = [r for r in result["rows"] if r["condition"] == cond
                    and isinstance(r.get(key), (int, float))]
            color = f"C{j % 10}"
            for k, row in enumerate(rows):
                x, lo, hi = pos[row["run"]] + dx, row.get(f"{key}_lo"), row.get(f"{key}_hi")
                if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
                    # The paired 95% interval; clipped at the value if rounding put it past.
                    ax.errorbar(x, row[key], yerr=[[max(row[key] - lo, 0)],
                                                   [max(hi - row[key], 0)]],
                                color=color, capsize=2, linewidth=0.8)
                ax.plot(x, row[key], "o" if row["kind"] != "base" else "s",
                        color=color, mfc=color if row["kind"] != "base" else "none",
                        label=cond if k == 0 else None)
        ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_title(title + " (instructed − baseline)", fontsize=10)
        ax.set_ylabel("gain")
    _peak_panel(axes[0, 2], runs, "probe_accuracy", "probe_layer",
                "best probe accuracy (label: layer)", "accuracy")
    _peak_panel(axes[1, 2], runs, "patching_peak", "patching_peak_layer",
                "peak patching effect (label: layer)", "effect")
    labels = [f"{Path(str(r['model'])).name}\n{_size_label(r['n_params'])}, {r['kind'] or '?'}"
              for r in runs]
    for ax in axes.ravel():
        ax.set_xticks(range(len(runs)))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_xlim(-0.6, len(runs) - 0.4)
    handles, names = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="upper right", fontsize=8, title="condition")
    fig.suptitle("Self-correction gain by model, paired 95% template-cluster bootstrap "
                 "interval (bias: < 0 = less biased; circle = aligned/chat, hollow square = base)",
                 fontsize=10)
    path = Path(path)
    fig.tight_layout(rect=(0, 0, 0.93, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
