"""Figures of the output study, drawn from a run's ``metrics.json`` (never from a model).

BBQ: bias score and accuracy per condition with 95% intervals (ambiguous and disambiguated
contexts in separate panels), bias score per category as small multiples, and the share of
answers at option a/b/c (a model's letter-position habit). Winogender: P(female) per
occupation against the BLS share of women, and the pronoun rates per condition.
:func:`plot_run` writes every figure that applies into ``RUN/plots/``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from probe.scoring.metrics import compute_metrics, shown_r
from probe.store.runlock import locks_run
from probe.store.runs import RunFolder

CONTEXTS = ("ambig", "disambig")
CONTEXT_TITLES = {"ambig": "ambiguous context", "disambig": "disambiguated context"}
LETTERS = ("a", "b", "c")
GENDER_COLORS = {"male": "tab:blue", "female": "tab:red", "neutral": "tab:gray"}


def pyplot() -> Any:
    """pyplot on the Agg backend (import deferred so importing this module stays cheap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, layout: bool = True) -> Path:
    """Write a figure as PNG (making its folder), close it, and return the path; ``layout``
    False keeps a layout the caller already made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout:
        fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path


def probability_axis(ax: Any, values: Sequence[float], axis: str = "y",
                     decades: float = 2.0) -> bool:
    """Put a probability axis on a log scale when its positive values span ``decades`` or
    more (a linear axis would crush all but the largest to 0); True when it did."""
    positive = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v) and v > 0]
    if len(positive) < 2 or math.log10(max(positive) / min(positive)) < decades:
        return False
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    return True


def _num(value: Any) -> float:
    """A metric value as a float; ``None`` (undefined, e.g. no items) becomes NaN."""
    return float(value) if isinstance(value, (int, float)) else math.nan


def condition_order(metrics: dict[str, Any], config: dict[str, Any] | None = None) -> list[str]:
    """Conditions in the run's configured order (baseline first), then any others sorted."""
    present = list(metrics.get("conditions", {}))
    configured = [c for c in (config or {}).get("conditions") or [] if c in present]
    order = configured + sorted(c for c in present if c not in configured)
    return sorted(order, key=lambda c: c != "baseline")  # stable: only moves baseline up


def _bbq(metrics: dict[str, Any], conds: Sequence[str]) -> dict[str, dict[str, Any]]:
    return {c: metrics["conditions"][c]["bbq"] for c in conds
            if "bbq" in metrics["conditions"].get(c, {})}


def _wino(metrics: dict[str, Any], conds: Sequence[str]) -> dict[str, dict[str, Any]]:
    return {c: metrics["conditions"][c]["winogender"] for c in conds
            if "winogender" in metrics["conditions"].get(c, {})}


def _interval_points(ax: Any, xs: Sequence[float], cells: Sequence[dict[str, Any]], key: str,
                     **style: Any) -> None:
    """Points with asymmetric 95% error bars; undefined values and intervals are skipped."""
    ys = [_num(c.get(key)) for c in cells]
    cis = [c.get(f"{key}_ci") or [None, None] for c in cells]
    # A bootstrap interval need not contain the point estimate; clip so bars stay >= 0.
    lo = [max(0.0, y - _num(ci[0])) for y, ci in zip(ys, cis, strict=True)]
    hi = [max(0.0, _num(ci[1]) - y) for y, ci in zip(ys, cis, strict=True)]
    lo = [v if math.isfinite(v) else 0.0 for v in lo]
    hi = [v if math.isfinite(v) else 0.0 for v in hi]
    ax.errorbar(xs, ys, yerr=[lo, hi], fmt=style.pop("fmt", "o"), capsize=3, **style)


def _context_panels(bbq: dict[str, dict[str, Any]], key: str, ylabel: str,
                    ylim: tuple[float, float], ref: float | None, title: str) -> Any:
    """One panel per context, one point per condition, n in the tick labels."""
    plt = pyplot()
    conds = list(bbq)
    fig, axes = plt.subplots(1, 2, figsize=(max(7.0, 1.3 * len(conds) + 4), 4.2), sharey=True)
    for ax, ctx in zip(axes, CONTEXTS, strict=True):
        cells = [bbq[c]["overall"][ctx] for c in conds]
        colors = ["black" if c == "baseline" else "tab:blue" for c in conds]
        for i, (cell, color) in enumerate(zip(cells, colors, strict=True)):
            _interval_points(ax, [i], [cell], key, color=color)
        if ref is not None:
            ax.axhline(ref, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xticks(range(len(conds)))
        ax.set_xticklabels([f"{c}\nn={cell['n']}" for c, cell in zip(conds, cells, strict=True)],
                           rotation=30, ha="right", fontsize=9)
        ax.set_xlim(-0.5, len(conds) - 0.5)
        ax.set_title(CONTEXT_TITLES[ctx])
        ax.set_xlabel("condition")
        ax.set_ylim(*ylim)
    axes[0].set_ylabel(ylabel)
    fig.suptitle(title)
    return fig


def plot_bias(bbq: dict[str, dict[str, Any]], path: Path) -> Path:
    """BBQ bias score per condition (pooled over categories) with 95% bootstrap intervals."""
    fig = _context_panels(bbq, "bias_score", "bias score (+1 = always the stereotyped answer)",
                          (-1.05, 1.05), 0.0, "BBQ bias score by condition (95% CI)")
    return save_figure(fig, path)


def plot_accuracy(bbq: dict[str, dict[str, Any]], path: Path) -> Path:
    """BBQ accuracy per condition with 95% bootstrap intervals; dashed line = chance (1/3)."""
    fig = _context_panels(bbq, "accuracy", "accuracy", (-0.02, 1.02), 1 / 3,
                          "BBQ accuracy by condition (95% CI; dashed = chance)")
    return save_figure(fig, path)


def plot_bias_by_category(bbq: dict[str, dict[str, Any]], path: Path) -> Path:
    """Small multiples: bias score per condition in each BBQ category, both contexts."""
    plt = pyplot()
    conds = list(bbq)
    cats = sorted({cat for block in bbq.values() for cat in block["by_category"]})
    cols = min(4, max(1, len(cats)))
    rows = max(1, -(-len(cats) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows + 0.8),
                             sharey=True, squeeze=False)
    for ax, cat in zip(axes.ravel(), cats, strict=False):
        for ctx, dx, marker in (("ambig", -0.12, "o"), ("disambig", 0.12, "s")):
            cells = [bbq[c]["by_category"].get(cat, {}).get(ctx, {}) for c in conds]
            _interval_points(ax, [i + dx for i in range(len(conds))], cells, "bias_score",
                             fmt=marker, markersize=4, label=CONTEXT_TITLES[ctx])
        ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_title(cat.replace("_", " "), fontsize=9)
        ax.set_xticks(range(len(conds)))
        ax.set_xticklabels(conds, rotation=45, ha="right", fontsize=9)
        ax.set_xlim(-0.5, len(conds) - 0.5)
        ax.set_ylim(-1.05, 1.05)
    for ax in axes.ravel()[len(cats):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("bias score")
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    # Above the panels: at the bottom it would cover the last row's tick labels.
    fig.suptitle("BBQ bias score per category and condition (95% CI)")
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    fig.legend(handles, labels, loc="upper right", fontsize=9, ncol=2)
    return save_figure(fig, path, layout=False)


def _stacked(keys: Sequence[str], shares: dict[str, dict[str, Any]], labels: dict[str, str],
             colors: dict[str, str] | None, ref: float | None, ylabel: str, title: str) -> Any:
    """Stacked share bars per condition, with each bar's n above it."""
    plt = pyplot()
    conds = list(shares)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 * len(conds) + 3), 4.2))
    bottom = [0.0] * len(conds)
    for key in keys:
        vals = [_num(shares[c].get(key)) for c in conds]
        vals = [v if math.isfinite(v) else 0.0 for v in vals]
        ax.bar(range(len(conds)), vals, bottom=bottom, label=labels[key],
               color=(colors or {}).get(key))
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    for i, c in enumerate(conds):
        ax.text(i, 1.02, f"n={shares[c].get('n', '?')}", ha="center", fontsize=7)
    if ref is not None:
        ax.axhline(ref, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(conds)))
    ax.set_xticklabels(conds, rotation=30, ha="right", fontsize=9)
    ax.set_xlabel("condition")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.1)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return fig


def plot_answer_positions(bbq: dict[str, dict[str, Any]], path: Path) -> Path:
    """Share of parsed BBQ answers at option (a), (b), (c) per condition."""
    shares = {c: b["answer_positions"] for c, b in bbq.items()}
    labels = {str(i): f"option ({letter})" for i, letter in enumerate(LETTERS)}
    fig = _stacked([str(i) for i in range(3)], shares, labels, None, None,
                   "share of parsed answers", "BBQ answer position habit by condition\n"
                   "(option order is shuffled: no habit = 1/3 each, dotted)")
    for y in (1 / 3, 2 / 3):
        fig.axes[0].axhline(y, color="black", linewidth=0.6, linestyle=":")
    return save_figure(fig, path)


def plot_pronoun_rates(wino: dict[str, dict[str, Any]], path: Path) -> Path:
    """Winogender: share of male / female / neutral pronouns chosen per condition."""
    shares = {c: {**w["rates"], "n": w["n"]} for c, w in wino.items()}
    fig = _stacked(list(GENDER_COLORS), shares, {g: g for g in GENDER_COLORS}, GENDER_COLORS,
                   None, "share of parsed answers", "Winogender pronoun choice by condition")
    return save_figure(fig, path)


def plot_winogender_scatter(wino: dict[str, dict[str, Any]], path: Path) -> Path:
    """P(female) per occupation vs the BLS share of women, one series per condition."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    markers = "osD^vP*X"
    for i, (cond, w) in enumerate(wino.items()):
        occ = [v for v in w["by_occupation"].values() if v.get("bls_pct_female") is not None]
        r = _num(shown_r(w, "r_bls"))
        lo, hi = (w.get("r_bls_ci") or [None, None])[:2]
        ci = (f" [{lo:+.2f}, {hi:+.2f}]" if isinstance(lo, (int, float))
              and isinstance(hi, (int, float)) else "")
        r_txt = f"r={r:+.2f}{ci}" if math.isfinite(r) else "r=n/a"
        ax.scatter([v["bls_pct_female"] for v in occ], [100 * v["p_female"] for v in occ],
                   marker=markers[i % len(markers)], alpha=0.7, s=22,
                   label=f"{cond} ({r_txt}, {len(occ)} occupations)")
    ax.plot([0, 100], [0, 100], color="grey", linewidth=0.8, linestyle="--",
            label="P(female) = BLS share")
    ax.set_xlim(0, 100)
    probs = [100 * _num(v.get("p_female")) for w in wino.values()
             for v in w["by_occupation"].values()]
    if not probability_axis(ax, probs):
        ax.set_ylim(-2, 102)
    ax.set_xlabel("% women in occupation (BLS)")
    ax.set_ylabel("P(female pronoun) x 100" + (" (log scale)" if ax.get_yscale() == "log"
                                                else ""))
    ax.set_title("Winogender: model's P(female) vs occupation statistics")
    ax.legend(fontsize=7, loc="upper left")
    return save_figure(fig, path)


# file name -> (benchmark block it needs, drawing function)
FIGURES: dict[str, tuple[str, Callable[[dict[str, dict[str, Any]], Path], Path]]] = {
    "bbq_bias.png": ("bbq", plot_bias),
    "bbq_accuracy.png": ("bbq", plot_accuracy),
    "bbq_bias_by_category.png": ("bbq", plot_bias_by_category),
    "bbq_answer_positions.png": ("bbq", plot_answer_positions),
    "winogender_scatter.png": ("winogender", plot_winogender_scatter),
    "winogender_rates.png": ("winogender", plot_pronoun_rates),
}


def run_metrics(folder: RunFolder) -> dict[str, Any]:
    """metrics.json, or metrics computed from the rows when scoring has not been written."""
    if folder.metrics.is_file():
        return folder.read_metrics()
    return compute_metrics(folder.rows())


def plot_metrics(metrics: dict[str, Any], out_dir: Path,
                 config: dict[str, Any] | None = None) -> list[Path]:
    """Write every output-study figure the metrics support into ``out_dir``."""
    conds = condition_order(metrics, config)
    blocks = {"bbq": _bbq(metrics, conds), "winogender": _wino(metrics, conds)}
    return [draw(blocks[bench], Path(out_dir) / name)
            for name, (bench, draw) in FIGURES.items() if blocks[bench]]


@locks_run("plots")
def plot_run(run_dir: str | Path) -> list[Path]:
    """Draw the output-study figures of a run into ``RUN/plots/``; returns their paths."""
    folder = RunFolder.open(run_dir)
    return plot_metrics(run_metrics(folder), folder.plots_dir, folder.config)
