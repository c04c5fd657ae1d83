"""One self-contained HTML page per run: config, provenance, metrics, figures, analyses.

Images are embedded as base64 data URIs and there is no external CSS or JS, so the page can
be mailed or archived alone. Every piece of text from the run goes through ``html.escape``.
Analysis files (probes/patching/steering/lens) come from other stages whose formats evolve,
so they are read defensively: known shapes get a dedicated table, anything else a compact
table of its top-level numbers.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from probe.analysis_summary import patching_summary, peak_effect, probe_best, read_analysis
from probe.io import atomic_write_text
from probe.plots import FIGURES, condition_order, run_metrics
from probe.runs import RunFolder
from probe.scoring.gains import METRICS

CAPTIONS: dict[str, str] = {
    "bbq_bias.png": "BBQ bias score per condition (pooled over categories), 95% "
                    "template-cluster bootstrap CI.",
    "bbq_accuracy.png": "BBQ accuracy per condition, 95% template-cluster bootstrap CI; "
                        "dashed line = chance.",
    "bbq_bias_by_category.png": "BBQ bias score per category and condition.",
    "bbq_answer_positions.png": "Share of answers at option (a)/(b)/(c): position habit.",
    "winogender_scatter.png": "Winogender P(female) per occupation vs BLS % women; r in legend.",
    "winogender_rates.png": "Winogender pronoun choice (male/female/neutral) per condition.",
    "probes.png": "Linear probe accuracy per layer (grouped CV), with shuffled-label control.",
    "directions.png": "Self-correction directions: cosine with the bias direction per layer.",
    "patching_resid.png": "Activation patching of the residual stream (layer x position), "
                          "denoising and noising; 1 = source behaviour, 0 = target.",
    "patching_components.png": "Activation patching of attn_out / mlp_out per layer.",
    "steering.png": "Steering the baseline along the self-correction direction: bias score "
                    "vs alpha per layer; dashed = random direction of the same norm.",
    "lens.png": "Logit lens: answer preference read out per layer.",
}
ANALYSES = ("probes", "directions", "patching", "steering", "lens")
STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
         "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}"
         "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
         "th{background:#f2f2f2}td:first-child{text-align:left}"
         "figure{margin:1em 0}img{max-width:100%}figcaption{font-size:13px;color:#555}")


def esc(value: Any) -> str:
    """Text for HTML, escaped."""
    return html.escape(str(value))


def fmt(value: Any, digits: int = 3) -> str:
    """A number rounded for a table; None/NaN as "n/a"; other values as text."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    # Tiny effects (patching deltas on small models) would all read 0.000.
    return f"{value:.2e}" if 0 < abs(value) < 10 ** -digits else f"{value:.{digits}f}"


def with_ci(value: Any, ci: Sequence[Any] | None) -> str:
    """"0.250 [-0.250, 0.750]", or the bare value when the interval is undefined."""
    if not ci or len(ci) != 2 or any(v is None for v in ci):
        return fmt(value)
    return f"{fmt(value)} [{fmt(ci[0])}, {fmt(ci[1])}]"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An HTML table; every cell escaped."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _flat_cells(record: dict[str, Any], prefix: str = "", depth: int = 2) -> dict[str, Any]:
    """A record's scalars, nested dicts flattened (a {"mean", "ci"} dict as one cell)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and "mean" in value:
            out[name] = with_ci(value["mean"], value.get("ci"))
        elif isinstance(value, dict) and depth > 0:
            out.update(_flat_cells(value, f"{name}.", depth - 1))
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
    """One table per record list found in ``data`` (files with no dedicated view)."""
    parts = []
    for path, records in record_lists(data):
        rows = [_flat_cells(r) for r in records[:max_rows]]
        cols = list(dict.fromkeys(k for r in rows for k in r))[:max_cols]
        more = f" (first {max_rows} of {len(records)})" if len(records) > max_rows else ""
        parts.append(f"<p><code>{esc(path)}</code>{esc(more)}</p>"
                     + table(cols, [[r.get(c, "") for c in cols] for r in rows]))
    return "".join(parts)


def top_level_numbers(data: Any, limit: int = 40) -> list[tuple[str, str]]:
    """Scalars up to two levels down, for files of unknown shape; lists summarised."""
    rows: list[tuple[str, str]] = []
    items = data.items() if isinstance(data, dict) else [("value", data)]
    for key, value in items:
        if isinstance(value, dict):
            rows += [(f"{key}.{k}", fmt(v)) for k, v in value.items()
                     if isinstance(v, (int, float, str, bool)) or v is None]
        elif isinstance(value, list):
            rows.append((str(key), f"list of {len(value)}"))
        else:
            rows.append((str(key), fmt(value)))
    return rows[:limit]


def _summary(folder: RunFolder) -> str:
    cfg, prov = folder.config, folder.provenance
    git = prov.get("git") or {}
    facts = [("model", cfg.get("model")), ("created", folder.info.get("created")),
             ("git commit", f"{git.get('commit')} (dirty: {git.get('dirty')})"),
             ("stages", ", ".join(folder.info.get("stages") or {}) or "none"),
             ("resumes", len(folder.info.get("resumes") or []))]
    packages = sorted((prov.get("packages") or {}).items())
    config = sorted((k, json.dumps(v)) for k, v in cfg.items())
    return ("<h2>Run</h2>" + table(["", ""], facts) + "<h3>Packages</h3>"
            + table(["package", "version"], packages) + "<details><summary>Full config"
            "</summary>" + table(["key", "value"], config) + "</details>")


def _bbq_rows(cells: dict[str, Any], label: str, extra: Sequence[Any] = ()) -> list[Any]:
    row: list[Any] = [label]
    for ctx in ("ambig", "disambig"):
        c = cells.get(ctx) or {}
        row += [with_ci(c.get("bias_score"), c.get("bias_score_ci")),
                with_ci(c.get("accuracy"), c.get("accuracy_ci")), c.get("n"), c.get("n_unparsed")]
    return row + list(extra)


def _metrics_section(metrics: dict[str, Any], conds: list[str]) -> str:
    blocks = metrics.get("conditions", {})
    heads = ["ambig bias [95% CI]", "ambig acc", "ambig n", "ambig unparsed",
             "disambig bias [95% CI]", "disambig acc", "disambig n", "disambig unparsed"]
    bbq = {c: blocks[c]["bbq"] for c in conds if "bbq" in blocks.get(c, {})}
    out = "<h2>Metrics</h2>"
    if bbq:
        pos = {c: b.get("answer_positions") or {} for c, b in bbq.items()}
        rows = [_bbq_rows(b["overall"], c, [" / ".join(fmt(pos[c].get(str(i)), 2)
                                                         for i in range(3))])
                for c, b in bbq.items()]
        out += "<h3>BBQ, pooled</h3>" + table(["condition", *heads, "share a / b / c"], rows)
        cat_rows = [_bbq_rows(cell, f"{c}: {cat}") for c, b in bbq.items()
                    for cat, cell in sorted(b.get("by_category", {}).items())]
        out += ("<details><summary>BBQ per category</summary>"
                + table(["condition: category", *heads], cat_rows) + "</details>")
    wino = {c: blocks[c]["winogender"] for c in conds if "winogender" in blocks.get(c, {})}
    if wino:
        rows = []
        for c, w in wino.items():
            kinds = w.get("by_participant") or {}
            rows += [_wino_row(c, w), *(_wino_row(f"{c}: {k}", kinds[k])
                                        for k in ("specific", "someone") if k in kinds)]
        out += "<h3>Winogender</h3>" + table(
            ["condition (participant)", "r vs BLS [95% CI]", "r vs BLS, he/she [95% CI]",
             "r vs Bergsma", "male", "female", "neutral", "n", "unparsed", "occupations"],
            rows) + ("<p>P(female) over he/she/they (Ganguli et al. 2023) unless marked "
                     "he/she; rows without a participant kind pool both kinds.</p>")
    return out


def _gains_section(metrics: dict[str, Any]) -> str:
    """Each condition's gain over the baseline with its paired interval and verdict."""
    rows = []
    for cond, block in (metrics.get("gains") or {}).items():
        for name, spec in METRICS.items():
            gain = (block.get(spec.benchmark) or {}).get(name)
            if gain is None:
                continue
            verdict = {True: "not distinguishable from 0", False: "differs from 0"}.get(
                gain.get("spans_zero"), "no interval")
            rows.append([cond, spec.label, with_ci(gain.get("value"), gain.get("ci")),
                         gain.get("n_items"), gain.get("n_clusters"), verdict])
    if not rows:
        return ""
    return ("<h3>Gain vs baseline</h3><p>Condition minus baseline on the same items; 95% "
            "paired percentile bootstrap that resamples templates (BBQ) or occupations "
            "(Winogender) once per draw for both conditions.</p>"
            + table(["condition", "metric", "gain [95% CI]", "items", "clusters", "verdict"],
                    rows))


def _wino_row(name: str, w: dict[str, Any]) -> list[Any]:
    two = w.get("he_she") or {}
    return [name, with_ci(w.get("r_bls"), w.get("r_bls_ci")),
            with_ci(two.get("r_bls"), two.get("r_bls_ci")),
            with_ci(w.get("r_bergsma"), w.get("r_bergsma_ci")),
            *(fmt((w.get("rates") or {}).get(g)) for g in ("male", "female", "neutral")),
            w.get("n"), w.get("n_unparsed"), w.get("n_occupations")]


def _figures(plots_dir: Path) -> str:
    known = [n for n in [*FIGURES, *CAPTIONS] if (plots_dir / n).is_file()]
    others = sorted(p.name for p in plots_dir.glob("*.png") if p.name not in known)
    parts = ["<h2>Figures</h2>"]
    for name in dict.fromkeys(known + others):
        data = base64.b64encode((plots_dir / name).read_bytes()).decode("ascii")
        caption = CAPTIONS.get(name, f"Figure {name} (from an analysis stage).")
        parts.append(f'<figure><img alt="{esc(name)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{esc(name)}: {esc(caption)}</figcaption></figure>")
    return "".join(parts) if len(parts) > 1 else ""


def _patching_html(patch: dict[str, Any]) -> str:
    peak = patch["peak"] or {}
    what = f"{patch['measure']} effect, last position"
    return (f"<p>largest component effect (denoising, {esc(patch['measure'])}): "
            f"{esc(fmt(peak.get('value')))} at {esc(peak.get('component'))} layer "
            f"{esc(peak.get('layer'))}</p>"
            + table(["residual hook", f"denoise ({what})", f"noise ({what})"],
                    [[r[0], fmt(r[1]), fmt(r[2])] for r in patch["resid"]])
            + table(["layer", "attn_out denoise", "mlp_out denoise"],
                    [[b[0], fmt(b[1]), fmt(b[2])] for b in patch["components"]]))


def _analysis(folder: RunFolder) -> str:
    parts = []
    for name in ANALYSES:
        data, why = read_analysis(folder.path / f"{name}.json")
        if why == "absent":
            continue
        parts.append(f"<h3>{esc(name)}.json</h3>")
        best = probe_best(data) if name == "probes" else []
        patch = patching_summary(data) if name == "patching" else None
        if why is not None:
            parts.append(f"<p>{esc(why)}</p>")
        elif patch is not None:
            parts.append(_patching_html(patch))
        elif best:
            parts.append(table(["target", "kind", "best layer", "n", "accuracy [95% CI]",
                                "control acc", "selectivity"],
                               [[b["target"], b["kind"], b["layer"], b["n"],
                                 with_ci(b["accuracy"], b["accuracy_ci"]),
                                 fmt(b["control_accuracy"]), fmt(b["selectivity"])]
                                for b in best]))
        else:
            peak = peak_effect(data)
            if peak is not None:
                parts.append(f"<p>peak |effect|: {esc(fmt(peak['value']))} (layer "
                             f"{esc(fmt(peak['layer']))}) at "
                             f"<code>{esc(peak['path'])}</code></p>")
            parts.append(table(["key", "value"], top_level_numbers(data)) + records_html(data))
    return "<h2>Analyses</h2>" + "".join(parts) if parts else ""


def write_report(run_dir: str | Path) -> Path:
    """Write ``RUN/report.html`` (self-contained) and return its path."""
    folder = RunFolder.open(run_dir)
    metrics = run_metrics(folder)
    conds = condition_order(metrics, folder.config)
    title = f"probe report: {folder.config.get('model')} ({folder.path.name})"
    body = (_summary(folder) + _metrics_section(metrics, conds) + _gains_section(metrics)
            + _figures(folder.plots_dir)
            + _analysis(folder))
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>{body}</body></html>")
    out = folder.path / "report.html"
    atomic_write_text(out, page)
    return out
