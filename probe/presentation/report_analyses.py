"""Detail tables of a run's analysis files (probes, directions, patching, steering, lens).

Formats evolve, so files are read defensively: probes.json and patching.json get dedicated
per-layer tables; any other file a table of its settings and one per list of per-layer (or
per-setting) records. Every per-layer table leads with a layer column (taken from the
record, or read off its hook name), and column names read as words, not dotted JSON keys.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from probe.analysis.summary import patching_summary, peak_effect, read_analysis
from probe.presentation.report_html import details, esc, fmt, table, with_ci, words
from probe.presentation.report_superficial import superficial_html

ANALYSES = ("probes", "directions", "patching", "steering", "lens", "superficial")
LAYER_RE = re.compile(r"(?:blocks\.|resid_(?:pre|post|mid) |layer )(\d+)")


def layer_of(record: dict[str, Any]) -> Any:
    """A record's layer: its "layer" key, else the number in its hook name or label."""
    if record.get("layer") is not None:
        return record["layer"]
    for key in ("hook", "label", "name"):
        found = LAYER_RE.search(str(record.get(key) or ""))
        if found:
            return int(found.group(1))
    return None


def _flat_cells(record: dict[str, Any], prefix: str = "", depth: int = 2) -> dict[str, Any]:
    """A record's scalars, nested dicts flattened (a {"mean", "ci"} dict as one cell)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix} {words(key)}".strip()
        if isinstance(value, dict) and "mean" in value:
            n, k = value.get("n"), value.get("n_clusters")
            counts = ", ".join(x for x in (f"n={n}" if n is not None else "",
                                            f"{k} templates" if k is not None else "") if x)
            out[name] = with_ci(value["mean"], value.get("ci")) + (f" ({counts})"
                                                                    if counts else "")
        elif isinstance(value, dict) and depth > 0:
            out.update(_flat_cells(value, name, depth - 1))
        elif value is None or isinstance(value, (int, float, str, bool)):
            out[name] = fmt(value)
    return out


def record_lists(data: Any, path: str = "", depth: int = 3) -> list[tuple[str, list[dict]]]:
    """Lists of dict records (per layer, per setting) anywhere near the top of ``data``."""
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        return [(path, data)]
    if not isinstance(data, dict) or depth == 0:
        return []
    return [found for key, value in data.items()
            for found in record_lists(value, f"{path}.{key}" if path else str(key), depth - 1)]


def records_html(data: Any, max_rows: int = 60, max_cols: int = 12) -> str:
    """One table per record list found in ``data``, layer first where records have one (or
    where the file's ``meta.layer_labels`` has one label per record, as lens.json)."""
    parts = []
    labels = (data.get("meta") or {}).get("layer_labels") if isinstance(data, dict) else None
    for path, records in record_lists(data):
        rows = []
        by_index = isinstance(labels, list) and len(labels) == len(records)
        for i, record in enumerate(records[:max_rows]):
            cells = _flat_cells(record)
            layer = layer_of(record)
            if layer is None and by_index and isinstance(labels, list):
                layer = labels[i]
            rows.append({"layer": fmt(layer), **cells} if layer is not None else cells)
        cols = list(dict.fromkeys(k for r in rows for k in r))[:max_cols]
        more = f" (first {max_rows} of {len(records)})" if len(records) > max_rows else ""
        parts.append(f"<p><b>{esc(words(path))}</b>{esc(more)}</p>"
                     + table(cols, [[r.get(c, "") for c in cols] for r in rows]))
    return "".join(parts)


def settings_rows(data: Any, limit: int = 40) -> list[tuple[str, str]]:
    """Scalars up to two levels down (settings, headline numbers); lists summarised."""
    rows: list[tuple[str, str]] = []
    items = data.items() if isinstance(data, dict) else [("value", data)]
    for key, value in items:
        if isinstance(value, dict):
            rows += [(words(f"{key}.{k}"), fmt(v)) for k, v in value.items()
                     if isinstance(v, (int, float, str, bool)) or v is None]
        elif isinstance(value, list):
            rows.append((words(key), f"list of {len(value)}"))
        else:
            rows.append((words(key), fmt(value)))
    return rows[:limit]


def _cell(cell: Any, measure: str) -> str:
    block = cell.get(measure) if isinstance(cell, dict) else None
    return with_ci(block.get("mean"), block.get("ci")) if isinstance(block, dict) else "n/a"


def patching_html(data: dict[str, Any]) -> str:
    """Per-layer residual and component effects (last position), with intervals."""
    summary = patching_summary(data)
    if summary is None:
        return ""
    measure = summary["measure"]
    what = ("normalised effect, 0 none, 1 full" if measure == "normalised"
            else "patched − unpatched readout (gap not reliable: no ratio)")
    resid, comps = data["resid"], data["components"]
    rows = [[layer_of({"label": label}), label, _cell(den[-1], measure), _cell(noi[-1], measure)]
            for label, den, noi in zip(resid["labels"], resid["denoise"], resid["noise"],
                                       strict=True)]
    bars = [[layer, *(_cell(comps[d][c][i], measure) for d in ("denoise", "noise")
                      for c in ("attn", "mlp") if c in comps.get(d, {}))]
            for i, layer in enumerate(comps["layers"])]
    heads = [f"{c}_out {d}" for d in ("denoise", "noise") for c in ("attn", "mlp")
             if c in comps.get(d, {})]
    meta = data.get("meta") or {}
    n_pos = len(resid.get("positions") or [])
    scope = (f"last position here; all {n_pos} patched positions ({meta.get('scope', '?')}) "
             "are in the residual-stream figure" if n_pos > 1 else "last position")
    return (f"<p>{esc(scope[0].upper() + scope[1:])}; {esc(what)}; 95% bootstrap intervals "
            f"over n={esc(meta.get('n_items', '?'))} items.</p>"
            + table(["layer", "residual hook", "denoise", "noise"], rows)
            + table(["layer", *heads], bars) + _heads_table(data, measure))


def _heads_table(data: dict[str, Any], measure: str) -> str:
    """Per layer, the attention head of largest |denoising effect| (hook_z patches)."""
    heads = data.get("heads")
    if not isinstance(heads, dict) or not isinstance(heads.get("denoise"), list):
        return ""
    per_layer = heads["denoise"]
    rows = []
    for layer, cells in zip(heads.get("layers") or range(len(per_layer)), per_layer,
                            strict=False):
        scored = [(abs(b["mean"]), h, c) for h, c in enumerate(cells or [])
                  if isinstance(b := (c or {}).get(measure), dict)
                  and isinstance(b.get("mean"), (int, float))]
        if scored:
            _, head, cell = max(scored, key=lambda t: t[0])
            rows.append([layer, head, _cell(cell, measure), cell.get("n")])
    return ("<p>Attention heads: per layer, the head whose output (denoising) moves the "
            "readout most.</p>" + table(["layer", "head", "denoise", "n"], rows)) if rows else ""


def probes_html(data: dict[str, Any]) -> str:
    """Per target, every layer's accuracy [CI] and control for each probe kind."""
    parts = []
    for name, target in (data.get("targets") or {}).items():
        layers = [r for r in (target or {}).get("layers") or [] if isinstance(r, dict)]
        kinds = list(dict.fromkeys(k for r in layers for k, v in r.items()
                                   if isinstance(v, dict) and "accuracy" in v))
        if not layers:
            parts.append(f"<p>{esc(words(name))}: {esc(target.get('skipped') or 'no layers')}"
                         "</p>")
            continue
        rows = [[layer_of(r), *(x for k in kinds for x in (
            with_ci(_g(r, k, "accuracy"), _g(r, k, "accuracy_ci")),
            fmt(_g(r, k, "control_accuracy")), fmt(_g(r, k, "p_value")),
            fmt(_g(r, k, "p_fwer"))))] for r in layers]
        heads = [h for k in kinds for h in (f"{k} accuracy [95% CI]", f"{k} control",
                                             f"{k} p", f"{k} p (max over layers)")]
        parts.append(f"<p><b>{esc(words(name))}</b>, n={esc(target.get('n'))}</p>"
                     + table(["layer", *heads], rows) + _rates_html(target.get("rates")))
    return "".join(parts)


def _rates_html(rates: Any) -> str:
    """Self-correction rate per condition (answer became "unknown") against its placebo."""
    if not isinstance(rates, dict) or not rates:
        return ""
    rows = [[c, with_ci(r.get("rate"), r.get("rate_ci")), r.get("n"), r.get("placebo") or "-",
             with_ci(r.get("placebo_rate"), r.get("placebo_rate_ci")),
             with_ci(r.get("difference"), r.get("difference_ci")),
             f"{r.get('n_paired')} ({r.get('n_paired_templates', '?')} templates)",
             str(r.get("verdict")) + (f" ({r['note']})" if r.get("note") else "")]
            for c, r in rates.items() if isinstance(r, dict)]
    return ("<p>Self-correction: ambiguous items not 'unknown' at baseline that answer "
            "'unknown' under the condition, against the placebo instruction on the same "
            "items (paired template-cluster 95% interval).</p>"
            + table(["condition", "rate [95% CI]", "n", "placebo", "placebo rate [95% CI]",
                     "difference [95% CI]", "n paired", "verdict"], rows))


def directions_html(data: dict[str, Any]) -> str:
    """Per pair and layer, the held-out cosine [CI] against its shuffled-condition null."""
    parts = []
    for name, pair in (data.get("pairs") or {}).items():
        rows = []
        for r in (pair or {}).get("layers") or []:
            h = r.get("heldout") if isinstance(r, dict) else None
            if isinstance(h, dict):
                ctrl = h.get("control") or {}
                rows.append([layer_of(r), with_ci(h.get("cosine"), h.get("cosine_ci")),
                             _range(ctrl.get("shuffled_condition_5_95")),
                             fmt(ctrl.get("p_value")), h.get("n_pairs"),
                             h.get("n_templates"), h.get("verdict")])
        if rows:
            parts.append(f"<p><b>{esc(name)}</b>: cosine of the held-out templates' shift "
                         "with the bias direction fitted on the other templates (BBQ only), "
                         "against shuffled-condition directions (5-95%).</p>"
                         + table(["layer", "cosine [95% CI]", "control 5-95%", "p", "n pairs",
                                  "templates", "verdict"], rows))
    return "".join(parts)


def _range(pair: Any) -> str:
    return (f"[{fmt(pair[0])}, {fmt(pair[1])}]" if isinstance(pair, list) and len(pair) == 2
            else "-")


def _g(record: dict[str, Any], kind: str, key: str) -> Any:
    block = record.get(kind)
    return block.get(key) if isinstance(block, dict) else None


def analyses_section(run_path: Path) -> str:
    """One block per analysis file the run has."""
    parts = []
    for name in ANALYSES:
        data, why = read_analysis(run_path / f"{name}.json")
        if why == "absent":
            continue
        parts.append(f"<h3>{esc(name)}.json</h3>")
        if why is not None:
            parts.append(f"<p>{esc(why)}</p>")
            continue
        dedicated = (patching_html(data) if name == "patching" and isinstance(data, dict)
                     else probes_html(data) if name == "probes" and isinstance(data, dict)
                     else directions_html(data) if name == "directions"
                     and isinstance(data, dict)
                     else superficial_html(data) if name == "superficial"
                     and isinstance(data, dict)
                     else "")
        if not dedicated:
            peak = peak_effect(data)
            if peak is not None:
                dedicated = (f"<p>largest |effect|: {esc(fmt(peak['value']))} (layer "
                             f"{esc(fmt(peak['layer']))}) at {esc(words(peak['path']))}</p>"
                             + records_html(data))
            else:
                dedicated = records_html(data)
        parts.append(dedicated + details("settings", table(None, settings_rows(data),
                                                            row_heads=True)))
    return "<h2>Analyses</h2>" + "".join(parts) if parts else ""
