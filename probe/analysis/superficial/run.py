"""``probe superficial RUN``: concept directions, trajectories, the superficial test, shift
alignment and (optionally) the causal check, into ``RUN/superficial.json`` and plots.

The concept directions need the model once (:mod:`probe.analysis.superficial.concept`);
they are stored in the run folder and reused while the seed, the model, the cached hooks
and the run's templates stay the same, so re-analysis reads only the run folder. The causal
check (:mod:`probe.analysis.superficial.causal`) needs the model and is resumable.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from probe.analysis import answers as ans
from probe.analysis.steer_controls import template_halves
from probe.analysis.superficial import concept
from probe.analysis.superficial.project import (
    BASELINE,
    Rows,
    analysed_rows,
    hooks_to_analyse,
    project,
    states,
)
from probe.analysis.superficial.ratio import TAU, model_verdict, ratio_block
from probe.analysis.superficial.shift import alignment
from probe.analysis.superficial.trajectories import CONTEXTS, trajectories
from probe.engine.models import LoadedModel
from probe.errors import ConfigError, DataError
from probe.scoring.stats import LEVEL
from probe.store.runlock import locks_run

PRIMARY = "ambig"  # the context whose ratio carries the per-model verdict


def _usable(index: dict[str, Any], seed: int, model: str, hooks: list[str],
            templates: set[str]) -> bool:
    return (index.get("seed") == seed and index.get("model") == model
            and set(hooks) <= set(index.get("hooks") or [])
            and templates <= set(index.get("folds") or {}))


def ensure_directions(run: Any, hooks: list[str], seed: int, data_dir: str | None,
                      loaded: LoadedModel | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The stored directions if they fit this run, else fit and store them (needs the model)."""
    from probe.scoring.bbq import cluster_key

    templates = {str(cluster_key(r)) for r in run.rows if r.get("benchmark") == "bbq"}
    stored = concept.load(run.path)
    if stored is not None and _usable(stored[1], seed, run.config.model, hooks, templates):
        return stored
    from probe.engine.inference import Engine

    data = ans.load_run(run.path, data_dir)
    groups = sorted({it.group for it in data.items})
    if len(groups) < 2:
        raise ConfigError("concept directions on held-out templates need at least 2 templates")
    folds = dict(zip(groups, template_halves(groups, seed), strict=True))
    loaded = loaded or ans.load_run_model(data)
    engine = Engine(loaded, data.config.batch_size, data.config.attention)
    vectors, fit_meta = concept.fit(engine, data.items, folds, hooks, data.config.system_prompt)
    index = {"seed": seed, "model": run.config.model, "hooks": hooks, "folds": folds,
             "contrasts": list(concept.CONTRASTS),
             "position": "last token of the answer text",
             "recipe": "baseline question (chat template, answer cue) + one answer written out",
             "summary": concept.summary(vectors, hooks, fit_meta.pop("reliability")),
             **fit_meta}
    concept.save(run.path, vectors, index)
    # What was stored (float32), so that a re-analysis reads exactly the same directions.
    return concept.load(run.path)  # type: ignore[return-value]


def _missing_components(hooks: list[str]) -> list[str]:
    have = {c for h in hooks if (lc := concept.component_of(h)) for c in [lc[1]]}
    return [c for c in concept.COMPONENTS if c not in have]


def analyse(run: Any, sel: Rows, vectors: dict[str, np.ndarray], summary: dict[str, Any],
            hooks: list[str], contrast: str, n_boot: int, seed: int,
            controls: dict[str, str] | None, position: int = -1) -> dict[str, Any]:
    """Trajectories, the superficial test and the shift alignment (no model needed);
    ``summary``: the directions' per-hook checks for ``contrast``."""
    conditions = list(dict.fromkeys(sel.condition))
    if BASELINE not in conditions:
        raise DataError("the run has no analysable baseline rows", str(run.path))
    traj = trajectories(run, sel, vectors, contrast, hooks, n_boot, seed, position)
    resid = [h for h in hooks if (concept.component_of(h) or (0, ""))[1] == "resid"]
    level = 1 - (1 - LEVEL) / max(len(resid), 1)
    tests, aligned = [], []
    for hook in hooks:
        layer, comp = concept.component_of(hook) or (None, None)
        X = states(run, hook, sel, None, position)
        dirs = concept.unit(vectors, contrast, hook)
        z = project(X, dirs, sel.fold)
        check = summary[hook]
        where = {"hook": hook, "layer": layer, "component": comp,
                 "direction": {k: check[k] for k in ("split_half_cosine", "split_half_p")}}
        for cond in conditions:
            if cond == BASELINE:
                continue
            for ctx in CONTEXTS:
                block = ratio_block(z, sel, cond, ctx, n_boot, seed,
                                    level if hook in resid else None, check["reliable"])
                tests.append({**where, "condition": cond, "context": ctx, **block})
        for cond, rec in alignment(X, sel, dirs, conditions, controls, n_boot, seed,
                                   check["reliable"]).items():
            aligned.append({**where, "condition": cond, **rec})
    _bonferroni(aligned)
    verdicts = {cond: model_verdict({t["hook"]: t for t in tests if t["condition"] == cond
                                     and t["context"] == PRIMARY and t["hook"] in resid})
                for cond in conditions if cond != BASELINE}
    return {"trajectories": traj, "superficial": {"by_hook": tests, "model": verdicts},
            "alignment": aligned}


def _bonferroni(records: list[dict[str, Any]]) -> None:
    """Add to each alignment record its random-direction p times the number of layers of its
    component and condition (Bonferroni), and whether it stays aligned at that level."""
    k: dict[tuple[str, str], int] = {}
    for r in records:
        k[(r["component"], r["condition"])] = k.get((r["component"], r["condition"]), 0) + 1
    for r in records:
        n = k[(r["component"], r["condition"])]
        r["random"]["p_bonferroni"] = min(1.0, r["random"]["p_value"] * n)
        r["aligned_bonferroni"] = (r["verdict"].startswith("aligned")
                                   and r["random"]["p_bonferroni"] < 0.05)


@locks_run("superficial")
def run_superficial(run_dir: str | Path, *, contrast: str = "anti", seed: int = 0,
                    n_boot: int = 1000, limit: int | None = None,
                    data_dir: str | None = None, loaded: LoadedModel | None = None,
                    controls: dict[str, str] | None = None,
                    causal_layers: list[int] | None = None, alphas: list[float] | None = None,
                    n_random: int = 20) -> dict[str, Any]:
    """Everything in the module doc; writes superficial.json and plots/superficial_*.png."""
    from probe.scoring.metrics import json_safe
    from probe.store.io import atomic_write_json
    from probe.store.opened_run import Run

    if contrast not in concept.CONTRASTS:
        raise ConfigError(f"--contrast {contrast!r}: expected one of {list(concept.CONTRASTS)}")
    start = time.perf_counter()
    run = Run(run_dir)
    hooks = [h for h in run.cache if concept.component_of(h)]
    if not hooks:
        raise DataError("no resid_post/attn_out/mlp_out activations cached in this run",
                        str(run.path / "activations"))
    vectors, index = ensure_directions(run, hooks, seed, data_dir, loaded)
    hooks = hooks_to_analyse(hooks, index)
    chosen = None if limit is None else {
        it.item_id for it in ans.load_run(run.path, data_dir, limit).items}
    sel = analysed_rows(run, index["folds"], chosen)
    out = analyse(run, sel, vectors, index["summary"][contrast], hooks, contrast, n_boot, seed,
                  controls)
    out["causal"] = None
    if causal_layers:
        from probe.analysis.superficial.causal import causal_check

        out["causal"] = causal_check(run.path, vectors, index, contrast, causal_layers, alphas,
                                     seed, limit, data_dir, loaded, n_random)
    out["meta"] = {
        "contrast": contrast, "seed": seed, "n_boot": n_boot, "limit": limit, "tau": TAU,
        "position": "last prompt token (-1)", "n_rows": len(sel.rows),
        "n_items": len(set(sel.item)), "n_templates": len(set(sel.cluster)),
        "conditions": list(dict.fromkeys(sel.condition)), "hooks": hooks,
        "components_missing": _missing_components(hooks),
        "directions": {"file": f"{concept.STEM}.safetensors", "n_items": index["n_items"],
                       "summary": index["summary"][contrast]},
        "primary_context": PRIMARY, "model": run.config.model,
        "seconds": round(time.perf_counter() - start, 2)}
    out = json_safe(out)
    atomic_write_json(run.path / "superficial.json", out)
    from probe.analysis.superficial.plots import plot_all

    plot_all(out, run.path / "plots")
    return out
