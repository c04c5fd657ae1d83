"""Headline numbers of a run's analysis files, for the report and for cross-model comparison.

Analysis files come from stages whose formats evolve, so they are read defensively: known
shapes (probes.json, patching.json) give their headline figures, and :func:`peak_effect`
finds the largest effect-like number in a file of any shape.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Keys whose largest magnitude is "the peak effect" of a patching/steering file.
EFFECT_WORDS = ("effect", "recover", "restor", "logit_diff", "delta", "change")


def read_analysis(path: Path) -> tuple[Any, str | None]:
    """A JSON file's data, or (None, why) when it is absent or unreadable."""
    if not path.is_file():
        return None, "absent"
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, ValueError) as err:
        return None, f"unreadable: {err}"


def _kinds(layers: list[dict[str, Any]]) -> list[str]:
    """Probe kinds of per-layer records: keys holding a dict with an accuracy."""
    return list(dict.fromkeys(k for r in layers for k, v in r.items()
                              if isinstance(v, dict) and "accuracy" in v))


_BEST_FIELDS = ("accuracy", "accuracy_ci", "control_accuracy", "selectivity", "p_value",
                "n_templates", "control")


def probe_best(data: Any) -> list[dict[str, Any]]:
    """Per probe target and kind, the best layer: the nested choice (``best``: chosen on
    held-out folds) when probes.json has it, else (older files) the layer of highest
    accuracy on the same folds, marked ``"nested": False``."""
    out: list[dict[str, Any]] = []
    targets = data.get("targets") if isinstance(data, dict) else None
    for name, target in (targets if isinstance(targets, dict) else {}).items():
        layers = [r for r in (target or {}).get("layers") or [] if isinstance(r, dict)]
        nested = (target or {}).get("best") or {}
        for kind in _kinds(layers):
            if isinstance(nested.get(kind), dict):
                b = nested[kind]
                out.append({"target": name, "kind": kind, "layer": b.get("layer"),
                            "n": target.get("n"), "nested": True,
                            **{f: b.get(f) for f in _BEST_FIELDS}})
                continue
            scored = [(float(r[kind]["accuracy"]), i) for i, r in enumerate(layers)
                      if isinstance((r.get(kind) or {}).get("accuracy"), (int, float))]
            if scored:
                best = layers[max(scored, key=lambda t: (t[0], -t[1]))[1]]
                out.append({"target": name, "kind": kind, "layer": best.get("layer"),
                            "n": target.get("n"), "nested": False,
                            **{f: best[kind].get(f) for f in _BEST_FIELDS}})
    return out


def _numeric_leaves(data: Any, path: str = "", layer: Any = None,
                    depth: int = 8) -> Iterable[tuple[str, float, Any]]:
    """(dotted path, value, layer of the closest enclosing record) for every finite number."""
    if isinstance(data, bool) or depth < 0:
        return
    if isinstance(data, (int, float)):
        if math.isfinite(data):
            yield path, float(data), layer
    elif isinstance(data, dict):
        layer = data.get("layer", layer)
        for key, value in data.items():
            yield from _numeric_leaves(value, f"{path}.{key}" if path else str(key), layer,
                                       depth - 1)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _numeric_leaves(value, f"{path}[{i}]", layer, depth - 1)


def peak_effect(data: Any) -> dict[str, Any] | None:
    """The effect-like number of largest magnitude anywhere in ``data``, where, and its layer.

    A heuristic for files whose schema is not fixed yet: the last key of a number's path
    is matched against :data:`EFFECT_WORDS`.
    """
    best: tuple[str, float, Any] | None = None
    for path, value, layer in _numeric_leaves(data):
        word = path.rsplit(".", 1)[-1].lower()
        if any(w in word for w in EFFECT_WORDS) and (best is None or abs(value) > abs(best[1])):
            best = (path, value, layer)
    if best is None:
        return None
    path, value, layer = best
    return {"path": path, "value": value, "layer": layer}


def _cell_value(cell: Any, measure: str) -> float | None:
    block = (cell or {}).get(measure) if isinstance(cell, dict) else None
    value = block.get("mean") if isinstance(block, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def patching_summary(data: Any) -> dict[str, Any] | None:
    """Residual rows and component bars of a patching.json (last position, denoising), and
    the component of largest effect; None when the file has another shape."""
    try:
        reliable = bool(data["metric"]["gap"]["reliable"])
        resid, comps = data["resid"], data["components"]
        measure = "normalised" if reliable else "delta"
        rows = [[label, _cell_value(den[-1], measure), _cell_value(noi[-1], measure)]
                for label, den, noi in zip(resid["labels"], resid["denoise"], resid["noise"],
                                           strict=True)]
        bars = [[layer, _cell_value(a, measure), _cell_value(m, measure)] for layer, a, m in
                zip(comps["layers"], comps["denoise"]["attn"], comps["denoise"]["mlp"],
                    strict=True)]
    except (KeyError, TypeError, IndexError, ValueError):
        return None
    peaks = [(abs(v), v, bar[0], name) for bar in bars
             for name, v in (("attn", bar[1]), ("mlp", bar[2])) if v is not None]
    peak = max(peaks, default=None)
    return {"measure": measure, "resid": rows, "components": bars,
            "peak": None if peak is None else {"value": peak[1], "layer": peak[2],
                                               "component": peak[3]}}
