"""Steering the baseline along a self-correction direction (``probe steer``).

The direction at layer L is ``mean(instruction resid) - mean(baseline resid)`` at
``blocks.L.hook_resid_post``, at the last prompt position of the run's own prompts, over
items the run has under both conditions. It is read from ``directions.safetensors`` when
``probe probes`` wrote one (same definition), else computed here with one prompt pass per
condition. ``alpha`` is a multiple of that raw (unnormalised) direction: the added vector is
``alpha * direction``, so alpha = 1 adds exactly the mean shift the instruction causes and
its norm is ``|alpha| * |direction|``. The control is a seeded random direction of the same
norm per layer.

The vector is added at every position, on the prompt pass and every generation step, and
the baseline is re-scored by the study's own batch step (:func:`probe.pipeline.run_batch`, the
run's mode, batches and config) inside the hook context, so alpha = 0 reproduces the run's
rows exactly. The alpha = 0 run does not depend on layer or direction, so it is run once
(steering the first layer) and its metrics shared by every line.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probe.analysis import answers as ans
from probe.analysis import readout as ro
from probe.analysis.checkpoint import Checkpoint, run_fingerprint
from probe.errors import ConfigError, ProbeError
from probe.hooks import Capture, HookFn
from probe.inference import Engine
from probe.models import LoadedModel
from probe.pipeline import Unit, plan_batches, run_batch
from probe.plots import pyplot, save_figure
from probe.runlock import locks_run

log = logging.getLogger(__name__)


def resid_hook(layer: int) -> str:
    """The hook steered at ``layer``."""
    return f"blocks.{layer}.hook_resid_post"


def compute_directions(engine: Engine, run: ans.RunData, instruction: str,
                       layers: list[int]) -> dict[int, torch.Tensor]:
    """Mean instruction minus mean baseline resid at the last position, per layer."""
    ids = [it.item_id for it in run.items
           if run.row(it.item_id, instruction) and run.row(it.item_id, ans.BASELINE)]
    if not ids:
        raise ConfigError(f"no items with rows under both {instruction} and baseline")
    hooks = [resid_hook(L) for L in layers]
    means = {}
    for cond in (instruction, ans.BASELINE):
        prompts = [run.rows[(i, cond)]["prompt"] for i in ids]
        capture = Capture(hooks, 1)

        def one(batch: list[str], capture: Capture = capture) -> list[dict[str, torch.Tensor]]:
            engine.forward_last(batch, capture=capture)
            acts = capture.take()
            return [{h: acts[h][b, -1].double() for h in hooks} for b in range(len(batch))]

        per_item = engine.map_batches(prompts, one, sort_key=len)
        means[cond] = {h: torch.stack([x[h] for x in per_item]).mean(0) for h in hooks}
    return {L: (means[instruction][h] - means[ans.BASELINE][h]).float()
            for L, h in zip(layers, hooks, strict=True)}


def load_or_compute(engine: Engine, run: ans.RunData, instruction: str,
                    layers: list[int]) -> tuple[dict[int, torch.Tensor], str]:
    """Directions from ``directions.safetensors`` if all are there, else computed."""
    try:
        from probe.analysis.directions import load_direction

        found = {L: load_direction(run.path, instruction, resid_hook(L)).float()
                 for L in layers}
        if all(v.shape == (engine.loaded.d_model,) for v in found.values()):
            return found, "directions.safetensors"
    except (ImportError, ProbeError, OSError) as err:
        log.info("computing directions (%s)", err)
    return compute_directions(engine, run, instruction, layers), "computed"


def random_like(vec: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded random direction with the norm of ``vec``."""
    gen = torch.Generator().manual_seed(seed)
    rnd = torch.randn(vec.shape, generator=gen, dtype=torch.float64)
    return (rnd * (vec.double().norm() / rnd.norm())).float()


def add_hook(vec: torch.Tensor) -> HookFn:
    """Hook that adds ``vec`` at every position."""

    def hook(tensor: torch.Tensor, hook: Any) -> torch.Tensor:
        return tensor + vec.to(device=tensor.device, dtype=tensor.dtype)

    return hook


def score_baseline(engine: Engine, run: ans.RunData, units: list[Unit],
                   hooks: list[tuple[str, HookFn]]) -> list[dict[str, Any]]:
    """The baseline rows re-scored with ``hooks`` attached, exactly as the run scored them."""
    rows: list[dict[str, Any]] = []
    with engine.running(hooks):
        for batch in plan_batches(units, run.config.batch_size):
            rows += [r.to_json() for r in run_batch(engine, batch, run.config, None)[0]]
    return rows


def bias_summary(rows: list[dict[str, Any]], readout: list[float] | None = None
                 ) -> dict[str, Any]:
    """Overall BBQ bias score (with interval) and accuracy per context condition, and the
    mean readout (:mod:`probe.analysis.readout`) over the rows that have one."""
    from probe.scoring.metrics import compute_metrics

    overall = compute_metrics(rows)["conditions"][ans.BASELINE]["bbq"]["overall"]
    out: dict[str, Any] = {cc: {"mean": overall[cc]["bias_score"],
                                "ci": overall[cc]["bias_score_ci"],
                                "accuracy": overall[cc]["accuracy"], "n": overall[cc]["n"]}
                           for cc in ("ambig", "disambig")}
    out["readout"] = ans.mean_ci(readout or [])
    return out


def steered(engine: Engine, run: ans.RunData, units: list[Unit],
            hooks: list[tuple[str, HookFn]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Re-scored baseline rows under ``hooks`` and their summary (bias score, readout)."""
    rows = score_baseline(engine, run, units, hooks)
    return rows, bias_summary(rows, ro.rows_readout(engine, run, rows, hooks))


def _steered_summary(engine: Engine, run: ans.RunData, units: list[Unit], layer: int,
                     vec: torch.Tensor) -> dict[str, Any]:
    """Bias summary of the baseline with ``vec`` added at ``layer`` (one checkpoint unit)."""
    return steered(engine, run, units, [(resid_hook(layer), add_hook(vec))])[1]


def same_as_run(rows: list[dict[str, Any]], run: ans.RunData, tol: float = 1e-4) -> bool:
    """Whether re-scored rows have the run's predictions and option scores.

    Scores are equal bit for bit when the batches are the run's own; with ``--limit`` the
    batches differ, so padding changes the float rounding and ``tol`` absorbs it.
    """
    for r in rows:
        ref = run.rows[(r["item_id"], r["condition"])]
        if ref["pred"] != r["pred"]:
            return False
        ours, theirs = r["option_scores"] or [], ref["option_scores"] or []
        if len(ours) != len(theirs):
            return False
        if any(abs(a - b) > tol for a, b in zip(ours, theirs, strict=True)):
            return False
    return True


def default_layers(n_layers: int) -> list[int]:
    """Three layers spread over the depth (a quarter, half, three quarters)."""
    return sorted({max(0, min(n_layers - 1, round(n_layers * f))) for f in (0.25, 0.5, 0.75)})


@locks_run("steer")
def run_steering(run_dir: str, instruction: str, layers: list[int] | None = None,
                 alphas: list[float] | None = None, seed: int = 0, limit: int | None = None,
                 loaded: LoadedModel | None = None, data_dir: str | None = None
                 ) -> dict[str, Any]:
    """Bias score of the steered baseline per layer and alpha, with a random control."""
    from probe.io import atomic_write_json
    from probe.scoring.metrics import json_safe

    run = ans.load_run(run_dir, data_dir, limit)
    loaded = loaded or ans.load_run_model(run)
    layers = default_layers(loaded.n_layers) if layers is None else layers
    bad = [L for L in layers if not 0 <= L < loaded.n_layers]
    if bad or not layers:
        raise ConfigError(f"--layers {bad or layers}: need layers in 0..{loaded.n_layers - 1}")
    alphas = [-8.0, -4.0, 0.0, 4.0, 8.0] if alphas is None else alphas
    units = [Unit(it, ans.BASELINE) for it in run.items if run.row(it.item_id, ans.BASELINE)]
    if not units:
        raise ConfigError(f"run {run_dir} has no baseline rows to steer")
    start = time.perf_counter()
    engine = Engine(loaded, run.config.batch_size, run.config.attention)
    directions, origin = load_or_compute(engine, run, instruction, layers)
    controls = {L: random_like(v, seed + L) for L, v in directions.items()}
    # Resumable per (layer, kind, alpha): RUN/steering.partial.jsonl until steering.json.
    ckpt = Checkpoint(run_dir, "steering", {
        "--instruction": instruction, "--layers": layers, "--alphas": alphas, "--seed": seed,
        "--limit": limit, "run rows (generations.jsonl sha256)": run_fingerprint(run_dir),
        "direction norms": [float(directions[L].norm()) for L in layers]})
    bar = ckpt.bar(1 + len(layers) * 2 * len(alphas), "steering runs")
    try:
        zero_rows, zero = ckpt.unit("alpha0", lambda: steered(
            engine, run, units, [(resid_hook(layers[0]), add_hook(0.0 * directions[layers[0]]))]))
        bar.update()
        results = []
        for L in layers:
            for kind, vec in (("direction", directions[L]), ("random", controls[L])):
                for alpha in alphas:
                    summary = zero if alpha == 0 else ckpt.unit(
                        f"{L}/{kind}/{alpha!r}", partial(_steered_summary, engine, run, units,
                                                         L, alpha * vec))
                    results.append({"layer": L, "kind": kind, "alpha": alpha, **summary})
                    bar.update()
    finally:
        bar.close()
        ckpt.close()
    stored = [v for v in (ro.row_value(run.rows[(u.item.item_id, u.condition)])
                          for u in units) if v is not None]
    out = json_safe({
        "readout": {**ro.readout_meta(run.config.mode),
                    "alpha0": zero["readout"], "run_stored": ans.mean_ci(stored)},
        "meta": {"instruction": instruction, "layers": layers, "alphas": alphas,
                 "hook": "blocks.L.hook_resid_post, all positions and generation steps",
                 "alpha": "multiple of the raw mean shift (instruction - baseline)",
                 "direction_source": origin, "control": f"random, same norm, seed {seed}+L",
                 "norms": {str(L): float(v.norm()) for L, v in directions.items()},
                 "mode": run.config.mode, "model": run.config.model, "n_items": len(units),
                 "alpha0_matches_run": same_as_run(zero_rows, run),
                 "seconds": round(time.perf_counter() - start, 2)},
        "results": results})
    atomic_write_json(Path(run_dir) / "steering.json", out)
    ckpt.finish()
    plot_steering(out, Path(run_dir) / "plots" / "steering.png")
    return out


def plot_steering(result: dict[str, Any], path: Path) -> Path:
    """Dose-response: bias score against alpha, a line per layer, dashed random control."""
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, cc in zip(axes, ("ambig", "disambig"), strict=True):
        for i, layer in enumerate(result["meta"]["layers"]):
            for kind, style in (("direction", "-"), ("random", "--")):
                recs = [r for r in result["results"] if r["layer"] == layer and r["kind"] == kind]
                ys = [np.nan if r[cc]["mean"] is None else r[cc]["mean"] for r in recs]
                ax.plot([r["alpha"] for r in recs], ys, style, marker="o", color=f"C{i % 10}",
                        label=f"layer {layer}" + (" (random)" if kind == "random" else ""))
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(title=f"{cc} bias score, baseline steered along "
                     f"{result['meta']['instruction']} - baseline",
               xlabel="alpha (multiples of the direction)", ylabel="bias score")
        ax.legend(fontsize=8)
    return save_figure(fig, path)
