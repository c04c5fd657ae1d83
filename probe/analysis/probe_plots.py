"""Plot of probe accuracy by layer (``plots/probes.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from probe.presentation.plots import pyplot, save_figure
from probe.store.io import read_json


def plot_probes(probes_json: Path | dict[str, Any], out_png: Path) -> Path:
    """Accuracy per layer, one panel per target, one line per kind, with the control band."""
    plt = pyplot()

    data = probes_json if isinstance(probes_json, dict) else read_json(probes_json)
    live = {n: t for n, t in data["targets"].items() if t.get("layers")}
    cols = min(3, max(1, len(live)))
    rows_n = max(1, -(-len(live) // cols))
    fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 3.6 * rows_n), squeeze=False)
    for ax, (name, target) in zip(axes.ravel(), live.items(), strict=False):
        _plot_target(ax, name, target, data["meta"]["kinds"])
    for ax in axes.ravel()[len(live):]:
        ax.axis("off")
    fig.suptitle("Linear probe accuracy by layer (grouped CV; grey = control task, random labels "
                 "per template cluster, 5-95% of draws)")
    return save_figure(fig, out_png)


def _plot_target(ax: Any, name: str, target: dict[str, Any], kinds: list[str]) -> None:
    layers = [rec["layer"] for rec in target["layers"]]
    band = np.array([[_band(rec[k]) for k in kinds] for rec in target["layers"]])
    ax.fill_between(layers, band[:, :, 0].min(1), band[:, :, 1].max(1), color="grey",
                    alpha=0.35, label="control task (5-95%)", linewidth=0)
    for kind in kinds:
        acc = [rec[kind]["accuracy"] for rec in target["layers"]]
        lo, hi = zip(*(rec[kind]["accuracy_ci"] for rec in target["layers"]), strict=True)
        ax.plot(layers, acc, marker=".", label=kind)
        ax.fill_between(layers, lo, hi, alpha=0.12)
    majority = max(target["pos_frac"], 1 - target["pos_frac"])
    ax.axhline(majority, color="k", linestyle="--", linewidth=0.8, label="majority class")
    ax.set_title(f"{name} (n={target['n']})", fontsize=10)
    ax.set_xlabel("layer (-1 = embeddings)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="lower right")


def _band(block: dict[str, Any]) -> tuple[float, float]:
    """5-95% of the control draws' accuracy (older files: the single control value)."""
    rng = (block.get("control") or {}).get("accuracy_5_95")
    return (rng[0], rng[1]) if rng else (block["control_accuracy"], block["control_accuracy"])
