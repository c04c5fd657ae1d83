"""Steering the baseline along a self-correction direction (``probe steer``).

The direction at layer L is ``mean(instruction resid) - mean(baseline resid)`` at
``blocks.L.hook_resid_post``, at the last prompt position of the run's own prompts, over
items the run has under both conditions, computed with one prompt pass per condition.
``alpha`` is a multiple of that raw (unnormalised) direction: alpha = 1 adds exactly the
mean shift the instruction causes, at the position where it was measured (each row's last
prompt token; :mod:`probe.analysis.steer_controls`). Templates are split in two halves and
each half is steered with the other half's direction (held out). The control is a band of
``n_random`` norm-matched random directions at the same layer, alpha and position.

The baseline is re-scored by the study's own batch step (:func:`probe.engine.pipeline.run_batch`,
the run's mode, batches and config) inside the hook context, so alpha = 0 (no hook)
reproduces the run's rows exactly; it is run once and shared by every layer.
"""

from __future__ import annotations

import contextlib
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probe.analysis import answers as ans
from probe.analysis import readout as ro
from probe.analysis import steer_controls as sc
from probe.analysis.checkpoint import Checkpoint, run_fingerprint
from probe.engine.hooks import Capture, HookFn
from probe.engine.inference import Engine
from probe.engine.models import LoadedModel
from probe.engine.pipeline import Unit, plan_batches, run_batch
from probe.errors import ConfigError
from probe.presentation.plots import pyplot, save_figure
from probe.store.runlock import locks_run

log = logging.getLogger(__name__)


def resid_hook(layer: int) -> str:
    """The hook steered at ``layer``."""
    return f"blocks.{layer}.hook_resid_post"


def compute_directions(engine: Engine, run: ans.RunData, instruction: str,
                       layers: list[int], only: set[str] | None = None
                       ) -> dict[int, torch.Tensor]:
    """Mean instruction minus mean baseline resid at the last position, per layer (over the
    items in ``only`` when given)."""
    ids = [it.item_id for it in run.items
           if run.row(it.item_id, instruction) and run.row(it.item_id, ans.BASELINE)
           and (only is None or it.item_id in only)]
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


def bias_summary(rows: list[dict[str, Any]], readout: list[float | None] | None = None
                 ) -> dict[str, Any]:
    """Overall BBQ bias score (with interval) and accuracy per context condition, and the
    mean readout (:mod:`probe.analysis.readout`; one value or None per row) over the rows
    that have one, its interval resampling templates as the bias score's does."""
    from probe.scoring.metrics import compute_metrics

    overall = compute_metrics(rows)["conditions"][ans.BASELINE]["bbq"]["overall"]
    out: dict[str, Any] = {cc: {"mean": overall[cc]["bias_score"],
                                "ci": overall[cc]["bias_score_ci"],
                                "accuracy": overall[cc]["accuracy"], "n": overall[cc]["n"]}
                           for cc in ("ambig", "disambig")}
    out["readout"] = readout_summary(rows, readout or [None] * len(rows))
    return out


def readout_summary(rows: list[dict[str, Any]], readout: list[float | None]) -> dict[str, Any]:
    """Mean readout over the rows that have one (``readout`` is aligned with ``rows``), its
    interval resampling BBQ templates as the bias score's does."""
    from probe.scoring import bbq

    have = [(v, bbq.cluster_key(r)) for v, r in zip(readout, rows, strict=True)
            if v is not None]
    return ans.mean_ci([v for v, _ in have], clusters=[k for _, k in have])


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


def _fold_hooks(layer: int, vecs: list[torch.Tensor]
                ) -> list[list[tuple[str, HookFn]]]:
    """Per template half, the last-prompt-position hook adding that half's vector."""
    return [[(resid_hook(layer), sc.LastPromptAdd(v))] for v in vecs]


def steered_folds(engine: Engine, run: ans.RunData, folds: list[list[Unit]],
                  hooks: list[list[tuple[str, HookFn]]]
                  ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each half re-scored under its own hooks (none: the run as it was); pooled summary."""
    rows: list[dict[str, Any]] = []
    readout: list[float | None] = []
    for units, fold_hooks in zip(folds, hooks, strict=True):
        adders = [fn for _, fn in fold_hooks if isinstance(fn, sc.LastPromptAdd)]
        with contextlib.ExitStack() as stack:
            for fn in adders:
                stack.enter_context(sc.track_prompt_ends(engine, fn))
            mine = score_baseline(engine, run, units, fold_hooks)
            readout += ro.rows_readout(engine, run, mine, fold_hooks)
        rows += mine
    return rows, bias_summary(rows, readout)


def _steer_layer(engine: Engine, run: ans.RunData, folds: list[list[Unit]], ckpt: Checkpoint,
                 bar: Any, L: int, vecs: list[torch.Tensor], alphas: list[float],
                 zero: dict[str, Any], seed: int, n_random: int) -> list[dict[str, Any]]:
    """Direction and random-band records of one layer, each steered run a checkpoint unit."""
    out: list[dict[str, Any]] = []
    for alpha in alphas:
        if alpha == 0:
            out += [{"layer": L, "kind": "direction", "alpha": alpha, **zero},
                    {"layer": L, "kind": "random", "alpha": alpha, **sc.band([zero]),
                     "verdict": "alpha 0: nothing added"}]
            continue

        def run_with(scaled: list[torch.Tensor]) -> dict[str, Any]:
            return steered_folds(engine, run, folds, _fold_hooks(L, scaled))[1]

        here = ckpt.unit(f"{L}/direction/{alpha!r}", partial(run_with, [alpha * v for v in vecs]))
        bar.update()
        draws = []
        for k in range(n_random):
            scaled = [alpha * sc.random_like(v, seed * 1000 + 31 * L + k) for v in vecs]
            draws.append(ckpt.unit(f"{L}/random{k}/{alpha!r}", partial(run_with, scaled)))
            bar.update()
        rand = sc.band(draws)
        out += [{"layer": L, "kind": "direction", "alpha": alpha, **here},
                {"layer": L, "kind": "random", "alpha": alpha, **rand,
                 "verdict": sc.verdict(here, rand)}]
    return out


@locks_run("steer")
def run_steering(run_dir: str, instruction: str, layers: list[int] | None = None,
                 alphas: list[float] | None = None, seed: int = 0, limit: int | None = None,
                 loaded: LoadedModel | None = None, data_dir: str | None = None,
                 n_random: int = sc.N_RANDOM) -> dict[str, Any]:
    """Bias score and readout of the steered baseline per layer and alpha, on held-out
    templates, against a band of norm-matched random directions (module doc)."""
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 1:
        raise ConfigError(f"--n-random {n_random!r}: need a whole number of random "
                          f"directions >= 1 (default {sc.N_RANDOM})")
    alphas = list(sc.DEFAULT_ALPHAS) if alphas is None else alphas
    if not alphas or not all(np.isfinite(a) for a in alphas):
        raise ConfigError(f"--alphas {alphas}: need at least one finite number")
    from probe.scoring.metrics import json_safe
    from probe.store.io import atomic_write_json

    run = ans.load_run(run_dir, data_dir, limit)
    loaded = loaded or ans.load_run_model(run)
    layers = default_layers(loaded.n_layers) if layers is None else layers
    bad = [L for L in layers if not 0 <= L < loaded.n_layers]
    if bad or not layers:
        raise ConfigError(f"--layers {bad or layers}: need layers in 0..{loaded.n_layers - 1}")
    units = [Unit(it, ans.BASELINE) for it in run.items if run.row(it.item_id, ans.BASELINE)]
    if not units:
        raise ConfigError(f"run {run_dir} has no baseline rows to steer")
    halves = sc.template_halves([u.item.group for u in units], seed)
    folds = [[u for u, h in zip(units, halves, strict=True) if h == f] for f in (0, 1)]
    if not all(folds):
        raise ConfigError("steering on held-out templates needs at least 2 templates")
    start = time.perf_counter()
    engine = Engine(loaded, run.config.batch_size, run.config.attention)
    # half f is steered with the direction fitted on the other half's items
    dirs = [compute_directions(engine, run, instruction, layers,
                               {u.item.item_id for u in folds[1 - f]}) for f in (0, 1)]
    # Resumable per (layer, alpha, draw): RUN/steering.partial.jsonl until steering.json.
    ckpt = Checkpoint(run_dir, "steering", {
        "--instruction": instruction, "--layers": layers, "--alphas": alphas, "--seed": seed,
        "--limit": limit, "--n-random": n_random,
        "run rows (generations.jsonl sha256)": run_fingerprint(run_dir),
        "direction norms": [[float(d[L].norm()) for d in dirs] for L in layers]})
    n_steered = sum(1 for a in alphas if a != 0)
    bar = ckpt.bar(1 + len(layers) * n_steered * (1 + n_random), "steering runs")
    try:
        # alpha 0 adds nothing: all items in one pass list, the run's own batching
        zero_rows, zero = ckpt.unit("alpha0", lambda: steered_folds(engine, run, [units], [[]]))
        bar.update()
        results = []
        for L in layers:
            results += _steer_layer(engine, run, folds, ckpt, bar, L, [d[L] for d in dirs],
                                    alphas, zero, seed, n_random)
    finally:
        bar.close()
        ckpt.close()
    stored_rows = [run.rows[(u.item.item_id, u.condition)] for u in units]
    stored = readout_summary(stored_rows, [ro.row_value(r) for r in stored_rows])
    out = json_safe({
        "readout": {**ro.readout_meta(run.config.mode),
                    "alpha0": zero["readout"], "run_stored": stored},
        "meta": {"instruction": instruction, "layers": layers, "alphas": alphas,
                 "hook": "blocks.L.hook_resid_post at each row's last prompt position (where "
                         "the direction was measured); not on options or generated tokens",
                 "alpha": "multiple of the raw mean shift (instruction - baseline)",
                 "direction_source": "computed per template half; each half steered with "
                                     "the other half's direction (held out)",
                 "control": f"{n_random} random directions, same norm, layer, alpha and "
                            "position: median and 5-95% band",
                 "n_random": n_random, "n_templates": len({u.item.group for u in units}),
                 "norms": {str(L): [float(d[L].norm()) for d in dirs] for L in layers},
                 "mode": run.config.mode, "model": run.config.model, "n_items": len(units),
                 "alpha0_matches_run": same_as_run(zero_rows, run),
                 "seconds": round(time.perf_counter() - start, 2)},
        "results": results})
    atomic_write_json(Path(run_dir) / "steering.json", out)
    ckpt.finish()
    plot_steering(out, Path(run_dir) / "plots" / "steering.png")
    return out


def plot_steering(result: dict[str, Any], path: Path) -> Path:
    """Dose-response: bias score against alpha, a line per layer; dashed with a band: the
    random directions' median and 5-95%."""
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, cc in zip(axes, ("ambig", "disambig"), strict=True):
        for i, layer in enumerate(result["meta"]["layers"]):
            for kind, style in (("direction", "-"), ("random", "--")):
                recs = [r for r in result["results"] if r["layer"] == layer and r["kind"] == kind]
                ys = [np.nan if r[cc]["mean"] is None else r[cc]["mean"] for r in recs]
                xs = [r["alpha"] for r in recs]
                ax.plot(xs, ys, style, marker="o", color=f"C{i % 10}",
                        label=f"layer {layer}" + (" (random, median)" if kind == "random"
                                                  else ""))
                if kind == "random":  # the 5-95% band of the random directions
                    lo, hi = ([np.nan if v is None else v for v in col] for col in zip(
                        *(r[cc].get("ci") or [None, None] for r in recs), strict=True))
                    ax.fill_between(xs, lo, hi, color=f"C{i % 10}", alpha=0.12, linewidth=0)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(title=f"{cc} bias score, baseline steered along "
                     f"{result['meta']['instruction']} - baseline",
               xlabel="alpha (multiples of the direction)", ylabel="bias score")
        ax.legend(fontsize=8)
    return save_figure(fig, path)
