"""Effects of activation patching and the ``probe patch`` study (patching.json, plots).

The mechanics live in :mod:`probe.analysis.patching`, the choice of patches in
:mod:`probe.analysis.patch_plan`. Effects are reported both ways with the same orientation:
``normalised = (patched - unpatched) / (other - unpatched)``, where denoising patches source
activations into the target (unpatched = target, other = source) and noising patches target
activations into the source (unpatched = source, other = target). So 0 is no effect and 1
is the full effect in both directions. The ratio is a ratio of item means (a per-item ratio
explodes on items where source ~ target) and is left out (null) when the mean source-target
gap is below ``threshold`` nats, its 95% bootstrap interval includes 0, or it rests on fewer
than ``MIN_ITEMS`` items (whose bootstrap interval is degenerate: one item gives [x, x]).
Raw patched readouts and deltas (patched - unpatched) are always reported, with intervals and
n.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from probe.analysis import answers as ans
from probe.analysis import patch_plan as pp
from probe.analysis import readout as ro
from probe.analysis.checkpoint import Checkpoint, digest, run_fingerprint
from probe.analysis.patch_control import MIN_ITEMS
from probe.analysis.patching import Patch, patch_pairs, resid_hooks
from probe.engine.inference import Engine
from probe.engine.models import LoadedModel
from probe.errors import ConfigError
from probe.scoring.stats import bootstrap_ci
from probe.store.runlock import locks_run

THRESHOLD = 0.1  # nats: a smaller mean source-target gap makes the ratio meaningless


def gap_summary(source: np.ndarray, target: np.ndarray, threshold: float = THRESHOLD,
                seed: int = 0, clusters: Sequence[Hashable] | None = None) -> dict[str, Any]:
    """Mean source-target gap with its interval (resampling ``clusters``: the items'
    templates), and whether a ratio over it is meaningful."""
    gap = ans.mean_ci(source - target, seed=seed, clusters=clusters)
    low, high = gap["ci"]
    reliable = (gap["mean"] is not None and abs(gap["mean"]) >= threshold
                and low is not None and high is not None and not low <= 0 <= high
                and min(gap["n"], gap["n_clusters"]) >= MIN_ITEMS)
    note = None if reliable else (
        f"mean source-target gap {gap['mean']} (95% CI {gap['ci']}, n={gap['n']} items, "
        f"{gap['n_clusters']} templates) is below {threshold} nats, its interval includes 0 "
        f"or it rests on fewer than {MIN_ITEMS} items or templates: normalised effects are "
        f"left out (null)")
    return {**gap, "reliable": reliable, "note": note}


def effect(patched: np.ndarray, unpatched: np.ndarray, other: np.ndarray, reliable: bool,
           threshold: float = THRESHOLD, seed: int = 0,
           clusters: Sequence[Hashable] | None = None) -> dict[str, Any]:
    """Raw patched readout, delta from unpatched, and normalised effect of one patch;
    intervals resample ``clusters`` (one key per item; None: items)."""
    gap, delta = other - unpatched, patched - unpatched
    out: dict[str, Any] = {"patched": ans.mean_ci(patched, seed=seed, clusters=clusters),
                           "delta": ans.mean_ci(delta, seed=seed, clusters=clusters),
                           "normalised": None, "normalised_items": None, "n": int(len(delta))}
    if reliable and len(delta):
        cols = np.stack([delta, gap], axis=1)
        low, high = bootstrap_ci(cols, lambda s: s[:, 0] / s[:, 1], ans.N_BOOT, seed,
                                 clusters=None if clusters is None else list(clusters))
        out["normalised"] = {"mean": float(delta.mean() / gap.mean()),
                             "ci": [ans._num(low), ans._num(high)]}
    big = np.abs(gap) >= threshold
    if big.any():
        out["normalised_items"] = {"mean": float((delta[big] / gap[big]).mean()),
                                   "n": int(big.sum())}
    out["per_item"] = [None if not np.isfinite(v) else float(v) for v in patched]
    return out


def _cells(arrays: dict[str, np.ndarray], reliable: bool, threshold: float,
           clusters: Sequence[Hashable] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Effects of every patch both ways, over the items the patch touched."""
    src, tgt = arrays["source"], arrays["target"]
    out: dict[str, list[dict[str, Any]]] = {"denoise": [], "noise": []}
    for i, ok in enumerate(arrays["valid"]):
        keys = None if clusters is None else [c for c, k in zip(clusters, ok, strict=True) if k]
        out["denoise"].append(effect(arrays["denoise"][i][ok], tgt[ok], src[ok], reliable,
                                     threshold, clusters=keys))
        out["noise"].append(effect(arrays["noise"][i][ok], src[ok], tgt[ok], reliable,
                                   threshold, clusters=keys))
    return out


def identity_checks(arrays: dict[str, np.ndarray], plan: pp.Plan, start: int | None = None
                    ) -> dict[str, Any]:
    """Largest |patched - expected| of each identity patch (denoising and noising); the
    identity patches are the arrays' rows from ``start`` (default: the plan's last ones)."""
    start = len(plan.patches()) - len(plan.identities) if start is None else start
    out = {}
    for i, name in enumerate(plan.identities):
        expect = pp.IDENTITY_EXPECT[name]
        other = "target" if expect == "source" else "source"
        out[name] = {
            "denoise_expect": expect, "noise_expect": other,
            "denoise_max_abs_dev": float(np.abs(arrays["denoise"][start + i]
                                                - arrays[expect]).max()),
            "noise_max_abs_dev": float(np.abs(arrays["noise"][start + i]
                                              - arrays[other]).max())}
    return out


def summarise(arrays: dict[str, np.ndarray], plan: pp.Plan, n_layers: int,
              threshold: float = THRESHOLD, clusters: Sequence[Hashable] | None = None
              ) -> dict[str, Any]:
    """patching.json's results: readout, residual grid, answer columns, components, heads.
    ``clusters`` (each item's template) are what every interval resamples."""
    src, tgt = arrays["source"], arrays["target"]
    gap = gap_summary(src, tgt, threshold, clusters=clusters)
    cells = _cells(arrays, gap["reliable"], threshold, clusters)
    k, n_hooks = len(plan.offsets), n_layers + 1
    labels = [f"resid_pre {L}" for L in range(n_layers)] + [f"resid_post {n_layers - 1}"]
    resid: dict[str, Any] = {"hooks": resid_hooks(n_layers), "labels": labels,
                             "positions": list(plan.offsets)}
    comps: dict[str, Any] = {"layers": list(range(n_layers)),
                             "positions": list(plan.all_positions)}
    n_resid = n_hooks * k + (n_hooks if plan.answer else 0)
    n_heads = len(plan.heads) // n_layers if n_layers else 0
    heads: dict[str, Any] = {"layers": list(range(n_layers)), "n_heads": n_heads,
                             "hook": "blocks.L.attn.hook_z", "positions": "all patched"}
    answer: dict[str, Any] = {"positions": list(plan.answer)}
    for d, eff in cells.items():
        resid[d] = [eff[r * k:(r + 1) * k] for r in range(n_hooks)]
        if plan.answer:
            answer[d] = eff[n_hooks * k:n_resid]
        comp = eff[n_resid:n_resid + len(plan.components)]
        comps[d] = {c: comp[j::2] for j, c in enumerate(("attn", "mlp"))}
        head = eff[n_resid + len(plan.components):n_resid + len(plan.components)
                   + len(plan.heads)]
        heads[d] = [head[L * n_heads:(L + 1) * n_heads] for L in range(n_layers)]
    resid["answer"] = answer if plan.answer else None
    span = range(n_resid, n_resid + len(plan.components))
    comps["simultaneous"] = component_band(arrays, span, gap["reliable"], clusters)
    return {"metric": {"source": ans.mean_ci(src, clusters=clusters),
                       "target": ans.mean_ci(tgt, clusters=clusters), "gap": gap},
            "resid": resid, "components": comps, "heads": heads,
            "identities": identity_checks(arrays, plan)}


def component_band(arrays: dict[str, np.ndarray], span: range, reliable: bool,
                   clusters: Sequence[Hashable] | None) -> dict[str, Any]:
    """A sup-t band over every attn/mlp output's denoising effect (the measure the report
    reads: normalised when the gap is reliable, else delta), valid for the largest one the
    report names after looking (:mod:`probe.analysis.simultaneous`)."""
    from probe.analysis.simultaneous import sup_t_band

    if not span:
        return {"measure": None, "attn": [], "mlp": []}
    src, tgt = arrays["source"], arrays["target"]
    num = np.stack([arrays["denoise"][i] - tgt for i in span])
    den = np.broadcast_to(src - tgt if reliable else np.ones_like(tgt), num.shape)
    keys = list(range(len(tgt))) if clusters is None else list(clusters)
    band = sup_t_band(num, den, arrays["valid"][list(span)], keys, ans.N_BOOT, 0)
    pairs = band["band"]
    return {"measure": "normalised" if reliable else "delta", "attn": pairs[0::2],
            "mlp": pairs[1::2], "q": band["q"], "n_clusters": band["n_clusters"],
            "n_boot": band["n_boot"], "method": band["method"]}


def edited_positions(engine: Engine, pairs: Sequence[Any], offsets: Sequence[int]
                     ) -> dict[str, Any]:
    """Offsets where some pair's source and target tokens differ, and the first pair's
    tokens at every offset (x-axis labels)."""
    from probe.analysis.patching import prompt_tokens

    edited = set()
    for p in pairs:
        s, t = prompt_tokens(engine, p.source), prompt_tokens(engine, p.target)
        edited |= {o for o in offsets if len(s) >= -o and len(t) >= -o and s[o] != t[o]}
    first = prompt_tokens(engine, pairs[0].target)
    tokens = [engine.tokenizer.decode([first[o]]) if len(first) >= -o else "" for o in offsets]
    return {"edited_offsets": sorted(edited), "first_item_tokens": tokens}


def per_item(arrays: dict[str, np.ndarray], pairs: Sequence[Any]) -> dict[str, Any]:
    """Average the displayed option orders of each item (counterbalanced runs: the run's own
    readout is that mean, see :func:`probe.analysis.readout.item_queries`); a patch counts
    for an item only if it touched every order."""
    ids = [p.item_id for p in pairs]
    out: dict[str, Any] = {}
    for key in ("source", "target"):
        out["item_ids"], out[key] = ro.item_means(ids, arrays[key])
    for key in ("denoise", "noise"):
        out[key] = ro.item_means(ids, arrays[key].T)[1].T
    out["valid"] = ro.item_means(ids, arrays["valid"].T.astype(float))[1].T > 1 - 1e-9
    return out


@locks_run("patch")
def run_patching(run_dir: str, source: str, target: str = ans.BASELINE,
                 positions: int | None = None, limit: int | None = None,
                 loaded: LoadedModel | None = None, data_dir: str | None = None,
                 threshold: float = THRESHOLD, control: str | None = None) -> dict[str, Any]:
    """Patch ``source`` into ``target`` (and back) on a run's items; write json and plots.

    ``positions`` None patches every position of aligned pairs (the shared last one of
    unaligned pairs); an integer k patches the last k positions only. ``control`` (default:
    the run's ``placebo-k`` for an ``instruct-k``/``negate-k`` source) is compared with the
    source on the readout gap (:mod:`probe.analysis.patch_control`).
    """
    from probe.analysis import patch_control as pc
    from probe.analysis.patch_plots import plot_patching
    from probe.scoring.metrics import json_safe
    from probe.store.io import atomic_write_json

    run = ans.load_run(run_dir, data_dir, limit)
    loaded = loaded or ans.load_run_model(run)
    engine = Engine(loaded, run.config.batch_size, run.config.attention)
    pairs, skipped = pp.build_pairs(run, engine, source, target)
    if not pairs:
        raise ConfigError(f"no items with rows under both {source} and {target} and a "
                          f"biased/unbiased answer pair (skipped: {skipped})")
    plan = pp.plan(engine, pairs, positions)
    start = time.perf_counter()
    # Resumable: each batch of pairs is kept in RUN/patching.partial.jsonl until the end.
    ckpt = Checkpoint(run_dir, "patching", {
        "--instruction": source, "--baseline": target, "--positions": positions,
        "--limit": limit, "run rows (generations.jsonl sha256)": run_fingerprint(run_dir),
        "patch plan (sha256)": digest(plan.patches())})
    try:
        arrays = per_item(patch_pairs(engine, run.config.mode, pairs, plan.patches(), ckpt),
                          pairs)
    finally:
        ckpt.close()
    clusters = ans.item_clusters(run, list(arrays["item_ids"]))
    result = summarise(arrays, plan, loaded.n_layers, threshold, clusters)
    result["readout"] = ro.readout_meta(run.config.mode)
    control = control or pc.default_control(run, source)
    result["control"] = None if control is None else pc.control_block(
        run, engine, control, source, target, list(arrays["item_ids"]), arrays["source"],
        arrays["target"])
    result["meta"] = {
        "source": source, "target": target, "alignment": plan.alignment, "scope": plan.scope,
        "n_unaligned_pairs": plan.n_unaligned, "n_items": len(arrays["item_ids"]),
        "n_prompt_pairs": len(pairs), "orders_per_item": len(pairs) // len(arrays["item_ids"]),
        "n_clusters": len(set(clusters)),
        "intervals": "95% percentile bootstrap over templates (items of one template are "
                     "resampled together)",
        "skipped": skipped,
        "model": run.config.model, "mode": run.config.mode,
        "positions": "offsets from the prompt end (-1 = last prompt token); 'answer' = the "
                     "option-tail columns, patched together",
        **edited_positions(engine, pairs, plan.offsets),
        "normalised": "(patched - unpatched) / (other - unpatched), ratio of item means; "
                      "denoise: target <- source, noise: source <- target; 0 none, 1 full",
        "threshold": threshold, "n_boot": ans.N_BOOT,
        "seconds": round(time.perf_counter() - start, 2)}
    stored = {(q.item_id, q.condition): ro.row_value(run.rows[(q.item_id, q.condition)])
              for p in pairs for q in (p.source, p.target)}
    result["items"] = [{"item_id": i, "source": float(s), "target": float(t),
                        "stored_source": stored[(i, source)], "stored_target": stored[(i, target)]}
                       for i, s, t in zip(arrays["item_ids"], arrays["source"], arrays["target"],
                                          strict=True)]
    result = json_safe(result)
    atomic_write_json(Path(run_dir) / "patching.json", result)
    ckpt.finish()
    plot_patching(result, Path(run_dir) / "plots")
    return result


__all__ = ["Patch", "effect", "gap_summary", "run_patching", "summarise"]
