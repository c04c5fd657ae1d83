"""Compare runs (one per model): the study's central figure and table.

For each run and each condition other than the baseline (built in or the user's own: none
is silently left out), the gain is the condition's metric minus the baseline one (BBQ bias
score and accuracy, ambiguous and disambiguated; Winogender r with BLS), with the paired
template-clustered 95% interval of metrics.json, set against model size and chat-vs-base
(from the model's tokenizer, see :mod:`probe.presentation.compare_checks`), with each
condition's own probe and patching peaks (with their intervals) when those analyses ran
for it. Runs that
differ in items, scoring mode or conditions are compared anyway, with a warning in the
table, compare.json/csv and figure. Model size comes from run.json provenance when
recorded, else from the safetensors headers of a locally available copy, else from a
``--size`` override.
"""

from __future__ import annotations

import csv
import io
import json
import math
import struct
from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from probe.analysis.summary import patching_summary, probe_best, read_analysis
from probe.errors import ConfigError
from probe.presentation.compare_checks import chat_kind, differences, run_facts
from probe.presentation.compare_format import NO_EFFECT, format_compare  # noqa: F401
from probe.presentation.compare_plot import plot_compare
from probe.presentation.plots import condition_order, run_metrics
from probe.scoring.gains import verdict
from probe.store.io import atomic_write_json, atomic_write_text
from probe.store.runs import RunFolder

BASELINE = "baseline"
GAINS = [(f"gain_{m}_{c}", m, c) for m in ("bias_score", "accuracy") for c in ("ambig", "disambig")]
# compare column -> metric name in metrics.json "gains"
GAIN_KEYS = {**{key: f"{m}_{c}" for key, m, c in GAINS}, "gain_r_bls": "r_bls"}
# metric -> (benchmark, (field, BBQ context or None)) in metrics.json "conditions"
GAIN_SOURCES: dict[str, tuple[str, tuple[str, str | None]]] = {
    **{f"{m}_{c}": ("bbq", (m, c)) for _, m, c in GAINS}, "r_bls": ("winogender", ("r_bls", None))}
SIZE_KEYS = ("n_params", "num_parameters", "param_count", "n_parameters")
SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


def parse_size(text: str) -> int:
    """A parameter count from "135M", "1.7B", "360000000"; ConfigError otherwise."""
    raw = text.strip().lower()
    scale = SUFFIXES.get(raw[-1:], 1.0)
    try:
        value = float(raw[:-1] if raw[-1:] in SUFFIXES else raw) * scale
    except ValueError:
        raise ConfigError(
            f"--size {text!r}: expected a count like 135M, 1.7B or 360000000") from None
    return int(value)


def safetensors_params(folder: Path) -> int | None:
    """Parameters stored in a folder's safetensors files, read from their headers only."""
    files = sorted(folder.glob("*.safetensors"))
    total = 0
    for file in files:
        with file.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return total or None


def model_dirs(name: str) -> list[Path]:
    """Local folders holding the model's files (no download is ever attempted)."""
    from probe.engine.models import EMBEDDED, cache_root  # deferred: it imports torch

    if Path(name).is_dir():
        return [Path(name)]
    if name in EMBEDDED:
        return sorted(p for p in (cache_root() / "models").glob(f"{name}-*")
                      if (p / "config.json").is_file())
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # hub id shapes vary; any failure here just means "not cached"
        return []
    return [Path(found).parent] if isinstance(found, str) else []


def _recorded(folder: RunFolder, keys: Sequence[str]) -> Any:
    prov = folder.provenance
    for place in (prov, prov.get("model") or {}, folder.config):
        for key in keys:
            if isinstance(place, dict) and place.get(key) is not None:
                return place[key]
    return None


def model_size(folder: RunFolder, overrides: dict[str, int]) -> tuple[int | None, str]:
    """(parameter count, where it came from) for a run's model."""
    name = str(folder.config.get("model"))
    for key in (folder.path.name, str(folder.path), name):
        if key in overrides:
            return overrides[key], "override"
    recorded = _recorded(folder, SIZE_KEYS)
    if isinstance(recorded, (int, float)):
        return int(recorded), "run.json"
    for path in model_dirs(name):
        count = safetensors_params(path)
        if count:
            return count, "safetensors"
    return None, "unknown"


def _diff(a: Any, b: Any) -> float | None:
    ok = all(isinstance(v, (int, float)) for v in (a, b))
    return float(a) - float(b) if ok else None


def _metric_cell(block: dict[str, Any], bench: str, ctx: str | None) -> dict[str, Any]:
    found = block.get(bench) or {}
    return found if ctx is None else found.get("overall", {}).get(ctx, {})


def _unpaired(blocks: dict[str, Any], cond: str, metric: str) -> dict[str, Any] | None:
    """A gain from a metrics.json written before paired intervals: the value only."""
    bench, (field, ctx) = GAIN_SOURCES[metric]
    value = _diff(_metric_cell(blocks[cond], bench, ctx).get(field),
                  _metric_cell(blocks[BASELINE], bench, ctx).get(field))
    return None if value is None else {"value": value, "ci": [None, None]}


def _gains(metrics: dict[str, Any], conds: list[str]) -> list[dict[str, Any]]:
    """Per condition but the baseline, each gain over the baseline with its paired interval
    (metrics.json "gains"); a metrics.json from before those gives values only."""
    blocks, paired = metrics.get("conditions", {}), metrics.get("gains")
    rows = []
    for cond in conds:
        if cond == BASELINE or BASELINE not in blocks:
            continue
        row: dict[str, Any] = {"condition": cond}
        for key, metric in GAIN_KEYS.items():
            bench = GAIN_SOURCES[metric][0]
            gain = (((paired.get(cond) or {}).get(bench) or {}).get(metric) if paired is not None
                    else _unpaired(blocks, cond, metric)) or {}
            lo, hi = gain.get("ci") or (None, None)
            row.update({key: gain.get("value"), f"{key}_lo": lo, f"{key}_hi": hi,
                        f"{key}_n": gain.get("n_items"), f"{key}_k": gain.get("n_clusters"),
                        f"{key}_verdict": verdict(gain) if gain else None})
        rows.append(row)
    return rows


def _ci(block: dict[str, Any], key: str) -> tuple[Any, Any]:
    ci = block.get(key)
    return (ci[0], ci[1]) if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)


def _target_condition(target: str) -> str | None:
    """The condition (glob) a probe target is about: "self_corrected:instruct-1" ->
    "instruct-1"; None for a target pooled over conditions."""
    parts = target.split(":")
    return parts[1] if len(parts) > 1 else None


def probe_peak(folder: RunFolder, cond: str | None) -> dict[str, Any]:
    """Best probe of a condition (self_corrected:C preferred, then condition:C), or with
    ``cond`` None the run's biased_answer probe; accuracy with its 95% interval."""
    best = probe_best(read_analysis(folder.path / "probes.json")[0])
    if cond is None:
        pick = [b for b in best if b["target"].split(":")[0] == "biased_answer"]
    else:
        mine = [b for b in best if fnmatchcase(cond, _target_condition(b["target"]) or "")]
        pick = ([b for b in mine if b["target"].startswith("self_corrected")]
                or [b for b in mine if b["target"].startswith("condition")])
    top = max(pick, key=lambda b: b["accuracy"]) if pick else {}
    low, high = _ci(top, "accuracy_ci")
    return {"probe_target": top.get("target"), "probe_layer": top.get("layer"),
            "probe_accuracy": top.get("accuracy"), "probe_accuracy_lo": low,
            "probe_accuracy_hi": high, "probe_control": top.get("control_accuracy"),
            "probe_p": top.get("p_value")}


def patching_peak(folder: RunFolder, cond: str) -> dict[str, Any]:
    """The patching peak of ``cond``, only when patching.json patched that condition (its
    meta.source), so no condition shows another's numbers; value with its 95% interval."""
    data = read_analysis(folder.path / "patching.json")[0]
    meta = data.get("meta") if isinstance(data, dict) else None
    summary = patching_summary(data) if (meta or {}).get("source") == cond else None
    if summary is not None and summary["measure"] != "normalised":
        # The gap was not reliable: the report says "No localisable effect", and so does
        # this (a largest raw delta would read as a location).
        return {"patching_peak": None, "patching_peak_lo": None, "patching_peak_hi": None,
                "patching_peak_layer": None, "patching_peak_component": None,
                "patching_measure": NO_EFFECT}
    peak = (summary or {}).get("peak") or {}
    cell: dict[str, Any] = {}
    if summary is not None and peak:
        comps = data["components"]
        cells = comps["denoise"].get(peak["component"]) or []
        index = comps["layers"].index(peak["layer"])
        cell = (cells[index] or {}).get(summary["measure"]) or {}
    low, high = _ci(cell, "ci")
    return {"patching_peak": peak.get("value"), "patching_peak_lo": low,
            "patching_peak_hi": high, "patching_peak_layer": peak.get("layer"),
            "patching_peak_component": peak.get("component"),
            "patching_measure": (summary or {}).get("measure")}


def compare_runs(run_dirs: Sequence[str | Path],
                 sizes: dict[str, int] | None = None) -> dict[str, Any]:
    """Per run: model, mode, size, chat/base, the run-level probe and how the run differs
    from the others; ``rows``: one per (run, instruction) with its gains (paired
    intervals) and its own analysis numbers; ``warnings``: every way the runs differ."""
    runs, rows, facts = [], [], []
    for run_dir in run_dirs:
        folder = RunFolder.open(run_dir)
        metrics = run_metrics(folder)
        facts.append(run_facts(folder, metrics))
        n_params, size_src = model_size(folder, sizes or {})
        kind, kind_src = chat_kind(folder)
        info = {"run": str(folder.path), "model": folder.config.get("model"),
                "mode": folder.config.get("mode"), "n_params": n_params,
                "size_source": size_src, "kind": kind, "kind_source": kind_src,
                **probe_peak(folder, None)}
        runs.append(info)
        for gain in _gains(metrics, condition_order(metrics, folder.config)):
            cond = gain["condition"]
            rows.append({**{k: info[k] for k in ("run", "model", "mode", "n_params", "kind")},
                         **gain, **probe_peak(folder, cond), **patching_peak(folder, cond)})
    warnings, per_run = differences(facts)
    for item in [*runs, *rows]:
        item["differs"] = ", ".join(per_run.get(item["run"], [])) or None
    return {"runs": runs, "rows": rows, "warnings": warnings}


def write_compare(result: dict[str, Any], out: str | Path) -> list[Path]:
    """compare.json, compare.csv and compare.png into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "compare.json", result)
    fields = list(dict.fromkeys(k for row in result["rows"] for k in row)) or ["run"]
    # Each row's "differs" column carries the warnings into the CSV (comment lines would
    # break CSV readers); compare.json has them in full.
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(result["rows"])
    atomic_write_text(out / "compare.csv", buffer.getvalue())
    return [out / "compare.json", out / "compare.csv", plot_compare(result, out / "compare.png")]
